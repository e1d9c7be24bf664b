"""Enhanced or denoised images as derived images of the source's own SOP class, in a new series.

highdicom builds no single-frame CT (or MR, ...) images, and Secondary Capture would lose the
geometry and rescale a viewer needs to show HU. So each output starts as a copy of its source,
which already carries every module its IOD requires, and only what the model changed is replaced:
identity (new series and SOP instance), ImageType DERIVED\\SECONDARY, the source reference, the
processing equipment (highdicom's ContributingEquipment) and the pixels, stored as int16 with the
source's RescaleSlope/Intercept so that stored values map back to the model's HU.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from edgeimg.dicom.derived_frames import (
    FUNCTIONAL_GROUPS,
    mark_frames_derived,
    rescales,
    source_reference,
)
from edgeimg.dicom.frames import frame_count, is_multiframe, single_int
from edgeimg.dicom.output_gate import REQUIRED
from edgeimg.dicom.write import MANUFACTURER, Output, check_sources, prepare, save
from edgeimg.sdk.model import ModelSpec

# Attributes of the source that would be wrong on the derived image: they describe the source's
# pixel encoding, its signatures, or references that the derived image replaces.
DROPPED = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "PlanarConfiguration",
    "IconImageSequence",
    "SourceImageSequence",
    "DerivationCodeSequence",
    "DigitalSignaturesSequence",
    "MACParametersSequence",
    "EncryptedAttributesSequence",
    "OriginalAttributesSequence",
    "DataSetTrailingPadding",
)
INT16 = np.iinfo(np.int16)
SOURCE_PURPOSE = codes.DCM.SourceImageForImageProcessingOperation


def write_derived(
    sources: list[Dataset],
    images: np.ndarray,
    *,
    model: ModelSpec,
    engine_key: str,
    out_dir: Path,
) -> list[Path]:
    """Write `images` (K, R, C) in HU, one derived image per source; return the paths.

    Image k lies on source frame k: `sources[k]` for single-frame images; a multi-frame
    (enhanced) source takes as many images as it has frames and gives a multi-frame image.
    """
    sources = check_sources(sources, one_series=True)
    images = _checked(images, sources)
    output = prepare("derived", "derived", sources, model, engine_key)
    now = datetime.now()
    ends = np.cumsum([frame_count(source) for source in sources])
    return [
        save(_derived(source, block, output, now), out_dir, [source])
        for source, block in zip(sources, np.split(images, ends[:-1]), strict=True)
    ]


def _checked(images: np.ndarray, sources: list[Dataset]) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    frames = sum(frame_count(source) for source in sources)
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in sources}
    if len(shapes) != 1 or images.shape != (frames, *shapes.pop()):
        raise ValueError(f"images have shape {images.shape}; expected one per frame, same size")
    if not np.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


def _derived(source: Dataset, images: np.ndarray, output: Output, now: datetime) -> Dataset:
    ds = copy.deepcopy(source)
    ds.remove_private_tags()
    for keyword in DROPPED:
        ds.pop(keyword, None)
    for tag in [tag for tag in ds.keys() if tag.group & 0xFF00 in (0x5000, 0x6000)]:
        del ds[tag]  # curves and overlays are drawn on the source's pixels
    if not is_multiframe(source):  # functional groups are no part of a single-frame IOD
        for keyword in FUNCTIONAL_GROUPS:
            ds.pop(keyword, None)
    _identify(ds, source, output, now)
    _reference(ds, source, output, now)
    _set_pixels(ds, images, rescales(ds))
    for keyword in REQUIRED.get(str(ds.SOPClassUID), ((), ()))[1]:
        if keyword not in ds:  # Type 2 the source left out: present and empty, as the IOD asks
            setattr(ds, keyword, None)
    named = "Laterality" in ds or "ImageLaterality" in ds or ds.get("BodyPartExamined")
    if not (named or is_multiframe(ds)):  # enhanced images name anatomy per frame
        ds.Laterality = None  # Type 2C: with no body part named, a paired one cannot be ruled out
    return ds


def _identify(ds: Dataset, source: Dataset, output: Output, now: datetime) -> None:
    """A new instance of the source's SOP class, in a new series of the source study."""
    ds.SOPInstanceUID = output.uids.instance(source.SOPInstanceUID)
    ds.InstanceNumber = single_int(source.get("InstanceNumber"))
    ds.SeriesInstanceUID = output.uids.series
    ds.SeriesNumber = output.series_number
    ds.SeriesDescription = output.series_description
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "SECONDARY", *list(getattr(source, "ImageType", []))[2:]]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _reference(ds: Dataset, source: Dataset, output: Output, now: datetime) -> None:
    """Say what the image came from and what made it: the source image, or for a multi-frame
    image each frame's source frame (its Derivation Image functional group)."""
    model = output.model
    description = f"{model.task} by {model.name} {model.version} ({output.engine_key})"
    if is_multiframe(source):
        mark_frames_derived(ds, source, description, SOURCE_PURPOSE)
    else:
        ds.SourceImageSequence = [source_reference(source, None, SOURCE_PURPOSE)]
        ds.DerivationDescription = description
    ds.ContributingEquipmentSequence = [
        *getattr(source, "ContributingEquipmentSequence", []),
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=output.model_name,
            software_versions=output.software_versions,
            device_serial_number=output.device_serial_number,
            contribution_datetime=now,
            contribution_description=model.task,
        ),
    ]


def _set_pixels(ds: Dataset, images: np.ndarray, scales: list[tuple[float, float]]) -> None:
    """Store HU as int16 through each frame's own rescale, so a viewer shows what the model
    made."""
    stored = np.stack(
        [
            np.clip(np.rint((image - intercept) / slope), INT16.min, INT16.max)
            for image, (slope, intercept) in zip(images, scales, strict=True)
        ]
    ).astype("<i2")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
