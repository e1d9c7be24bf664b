"""Enhanced CT for pipelines that must handle multi-frame input.

Two ways to the same phantom as a multi-frame object: `enhanced_dataset` builds a true Enhanced
CT Image Storage instance (one file per series, shared and per-frame functional groups, the
geometry nowhere at the top level) the way a modern scanner sends it; `legacy_converted` turns
a single-frame series into highdicom's Legacy Converted Enhanced CT, as a PACS might. Readers
that only look at top-level PixelSpacing or ImagePositionPatient fail on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian

from edgeimg.synth.phantom import Phantom

__all__ = ["ENHANCED_FILE", "enhanced_dataset", "legacy_converted"]

ENHANCED_FILE = "enhanced.dcm"
"""The one file of an enhanced series, inside its series folder."""

_CT_CODE = ("113691", "DCM", "IEC Body Dosimetry Phantom")
_ABDOMEN = ("818981001", "SCT", "Abdomen")
_IMAGE_TYPE = ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")


def _item(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _seq(**values: Any) -> DicomSequence:
    """A functional group macro: a sequence of exactly one item."""
    return DicomSequence([_item(**values)])


def _acquisition_groups(phantom: Phantom, size: int, dose: float) -> Dataset:
    """The CT acquisition, geometry, reconstruction, exposure and X-ray macros (all shared)."""
    spacing = round(phantom.pixel_spacing, 6)
    current = max(round(200 * dose), 1)
    return _item(
        CTAcquisitionTypeSequence=_seq(
            AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO"
        ),
        CTAcquisitionDetailsSequence=_seq(
            DataCollectionDiameter=500,
            RevolutionTime=0.5,
            SingleCollimationWidth=0.625,
            TotalCollimationWidth=40.0,
            TableHeight=160,
            GantryDetectorTilt=0,
            RotationDirection="CW",
        ),
        CTTableDynamicsSequence=_seq(
            TableSpeed=80.0, TableFeedPerRotation=40.0, SpiralPitchFactor=1.0
        ),
        CTGeometrySequence=_seq(
            DistanceSourceToDetector=1085.6, DistanceSourceToDataCollectionCenter=595.0
        ),
        CTReconstructionSequence=_seq(
            ReconstructionAlgorithm="FILTER_BACK_PROJ",
            ConvolutionKernel="STANDARD",
            ConvolutionKernelGroup="SOFT_TISSUE",
            ReconstructionDiameter=round(spacing * size, 3),
            ReconstructionPixelSpacing=[spacing, spacing],
            ReconstructionAngle=360.0,
            ImageFilter="NONE",
        ),
        CTExposureSequence=_seq(
            ExposureTimeInms=500.0,
            XRayTubeCurrentInmA=float(current),
            ExposureInmAs=current * 0.5,
            ExposureModulationType="NONE",
            CTDIvol=round(12.0 * dose, 3),
            CTDIPhantomTypeCodeSequence=[_code(*_CT_CODE)],
        ),
        CTXRayDetailsSequence=_seq(
            KVP=120, FocalSpots=[1.0], FilterType="BODY FILTER", FilterMaterial="ALUMINUM"
        ),
    )


def _shared_groups(phantom: Phantom, size: int, series: dict[str, Any]) -> Dataset:
    shared = _acquisition_groups(phantom, size, series["dose_fraction"])
    spacing = round(phantom.pixel_spacing, 6)
    shared.PixelMeasuresSequence = _seq(
        PixelSpacing=[spacing, spacing], SliceThickness=phantom.slice_thickness
    )
    shared.PlaneOrientationSequence = _seq(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    shared.PixelValueTransformationSequence = _seq(
        RescaleIntercept=series["intercept"], RescaleSlope=1, RescaleType="HU"
    )
    shared.FrameVOILUTSequence = _seq(
        WindowCenter=40, WindowWidth=400, WindowCenterWidthExplanation="ABDOMEN"
    )
    shared.CTImageFrameTypeSequence = _seq(
        FrameType=list(_IMAGE_TYPE),
        PixelPresentation="MONOCHROME",
        VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE",
    )
    shared.FrameAnatomySequence = _seq(
        AnatomicRegionSequence=[_code(*_ABDOMEN)], FrameLaterality="U"
    )
    shared.IrradiationEventIdentificationSequence = _seq(
        IrradiationEventUID=series["irradiation_uid"]
    )
    return shared


def _frame_group(phantom: Phantom, k: int, corner: float, when: str) -> Dataset:
    """Frame k: its position, and its place in the one stack (the dimension index values)."""
    z = round(float(phantom.positions_z[k]), 4)
    return _item(
        FrameContentSequence=_seq(
            FrameAcquisitionNumber=1,
            FrameReferenceDateTime=when,
            FrameAcquisitionDateTime=when,
            FrameAcquisitionDuration=500.0,
            StackID="1",
            InStackPositionNumber=k + 1,
            DimensionIndexValues=[1, k + 1],
        ),
        PlanePositionSequence=_seq(ImagePositionPatient=[corner, corner, z]),
        CTPositionSequence=_seq(
            TablePosition=-z,
            ReconstructionTargetCenterPatient=[0.0, 0.0, z],
            DataCollectionCenterPatient=[0.0, 0.0, z],
        ),
    )


def _dimensions(ds: Dataset, organization_uid: str) -> None:
    """Multi-frame Dimension module: frames indexed by stack, then position in the stack."""
    ds.DimensionOrganizationSequence = _seq(DimensionOrganizationUID=organization_uid)
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=organization_uid,
                DimensionIndexPointer=Tag(pointer),
                FunctionalGroupPointer=Tag("FrameContentSequence"),
                DimensionDescriptionLabel=label,
            )
            for pointer, label in (
                ("StackID", "Stack ID"),
                ("InStackPositionNumber", "In-Stack Position Number"),
            )
        ]
    )


def enhanced_dataset(
    base: Dataset, phantom: Phantom, pixels: np.ndarray, series: dict[str, Any]
) -> Dataset:
    """One Enhanced CT Image Storage instance holding every slice of a series as a frame.

    `base` holds the patient, study and equipment attributes; `series` the values that
    `edgeimg.synth.dicom` uses for a classic series (uid, number, description, frame_uid,
    dose_fraction, intercept, date, time) plus `sop_uid`, `irradiation_uid` and
    `organization_uid`. Frame k is slice k of `pixels` (stored values).
    """
    ds = Dataset()
    ds.update(base)
    date, time = series["date"], series["time"]
    when = date + time
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = series["sop_uid"]
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series["uid"]
    ds.SeriesNumber = series["number"]
    ds.SeriesDescription = series["description"]
    ds.SeriesDate = date
    ds.SeriesTime = time
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = series["frame_uid"]
    ds.PositionReferenceIndicator = ""
    ds.DeviceSerialNumber = "SYNTH-0001"

    ds.ImageType = list(_IMAGE_TYPE)
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ContentQualification = "RESEARCH"
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = when
    ds.AcquisitionDuration = 500.0 * len(pixels) / 1000.0
    ds.ContentDate = date
    ds.ContentTime = time
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = DicomSequence()

    size = pixels.shape[-1]
    corner = round(-phantom.pixel_spacing * (size - 1) / 2.0, 4)
    ds.SharedFunctionalGroupsSequence = DicomSequence([_shared_groups(phantom, size, series)])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [_frame_group(phantom, k, corner, when) for k in range(len(pixels))]
    )
    _dimensions(ds, series["organization_uid"])

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = len(pixels)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.int16).tobytes()

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def legacy_converted(
    datasets: Sequence[Dataset], series_uid: str, sop_uid: str, series_number: int = 900
) -> Dataset:
    """highdicom's Legacy Converted Enhanced CT Image built from one single-frame CT series.

    The result is a new series in the same study; its frames keep the sources' order.
    """
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    image = LegacyConvertedEnhancedCTImage(
        legacy_datasets=list(datasets),
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
    )
    image.file_meta = FileMetaDataset()
    image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
    image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
    image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return image
