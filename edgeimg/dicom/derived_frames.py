"""What a derived image changes in a multi-frame (enhanced) source's functional groups.

A classic image keeps its rescale and its source reference at the top level. An enhanced image
keeps them per frame or shared: the Pixel Value Transformation group says how each frame's
stored values map to HU, the Frame Type says ORIGINAL or DERIVED, and the Derivation Image group
names the frame a frame was made from. The derived copy keeps each frame's rescale, marks the image
and every frame DERIVED and points each frame at its source frame.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from edgeimg.dicom.frames import frame_count

FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
#: value 1 of Image Type and Frame Type; in enhanced images value 2 stays what the source said
#: (PRIMARY is its only defined value there)
DERIVED = "DERIVED"
#: CID 7203 Image Derivation has no code for a learned denoiser; smoothing is what it does
IMAGE_PROCESSING = codes.cid7203.Smoothing


def rescales(ds: Dataset) -> list[tuple[float, float]]:
    """(slope, intercept) per frame: per-frame group, shared group, then the top level."""
    shared = _group(ds, "SharedFunctionalGroupsSequence", 0)
    scales = []
    for index in range(frame_count(ds)):
        own = _group(ds, "PerFrameFunctionalGroupsSequence", index)
        found = _transformation(own) or _transformation(shared) or ds
        slope = float(found.get("RescaleSlope", 1) or 1)
        scales.append((slope, float(found.get("RescaleIntercept", 0) or 0)))
    return scales


def mark_frames_derived(ds: Dataset, source: Dataset, description: str, purpose: Code) -> None:
    """Image and frame types DERIVED; each frame's Derivation Image names its source frame,
    and the Source Image Evidence names the source."""
    for keyword in FUNCTIONAL_GROUPS:
        for group in ds.get(keyword) or []:
            for element in group:
                if element.VR == "SQ":
                    for item in element.value:
                        if "FrameType" in item:
                            item.FrameType = [DERIVED, *list(item.FrameType)[1:]]
    ds.ImageType = [DERIVED, *list(source.get("ImageType") or ["", "PRIMARY"])[1:]]
    ds.SourceImageEvidenceSequence = [_evidence(source)]
    for number, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or [], start=1):
        derivation = Dataset()
        derivation.DerivationDescription = description[:1024]
        derivation.DerivationCodeSequence = [_coded(IMAGE_PROCESSING)]
        derivation.SourceImageSequence = [source_reference(source, number, purpose)]
        group.DerivationImageSequence = [derivation]


def source_reference(source: Dataset, frame: int | None, purpose: Code) -> Dataset:
    """An item of Source Image Sequence naming `source` (and its frame) for `purpose`."""
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame
    item.PurposeOfReferenceCodeSequence = [_coded(purpose)]
    return item


def _evidence(source: Dataset) -> Dataset:
    """The Hierarchical SOP Instance Reference to the source an enhanced image requires."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = [instance]
    study = Dataset()
    study.StudyInstanceUID = source.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    return study


def _coded(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _group(ds: Dataset, keyword: str, index: int) -> Dataset:
    items = ds.get(keyword) or []
    return items[index] if index < len(items) else Dataset()


def _transformation(group: Dataset) -> Dataset | None:
    items = group.get("PixelValueTransformationSequence") or []
    return items[0] if items else None
