"""The output gate: an object that would fail its IOD where a PACS looks is never written.

Every SR, SEG and derived image passes here on its way to disk (and so to any destination):
what a PACS and a viewer rely on is checked — the attributes its IOD requires (Type 1 present
and not empty, Type 2 present, conditional ones where their condition holds), consistent
geometry, and references that resolve to the sources the object was made from. dciodvfy
remains the judge in the tests; this is the subset of its rules that matters for our objects,
cheap enough to run on every one. A failure names the object kind and the attribute.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from edgeimg.dicom.frames import frame_count
from edgeimg.dicom.type2 import COPIED_TYPE2
from edgeimg.errors import EdgeimgError

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CT = "1.2.840.10008.5.1.4.1.1.2.2"
#: (0040,A360) Predecessor Documents Sequence: earlier outputs, not sources
PREDECESSORS = 0x0040A360
#: (0008,1155) Referenced SOP Instance UID
REFERENCED_SOP_INSTANCE = 0x00081155
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
IMAGE_PIXEL = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PixelData",
)
#: Type 1 (present, not empty) and Type 2 (present) attributes, by what every object shares and
#: by SOP class; the CT Image IOD stands for the derived images of our CT sources
COMMON_1 = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
COMMON_2 = (*COPIED_TYPE2, "SeriesNumber")
REQUIRED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    COMPREHENSIVE_3D_SR: (
        (
            "ValueType",
            "ConceptNameCodeSequence",
            "ContentSequence",
            "CompletionFlag",
            "VerificationFlag",
            "ContentDate",
            "ContentTime",
            "Manufacturer",
        ),
        (
            "InstanceNumber",
            "ReferencedPerformedProcedureStepSequence",
            "PerformedProcedureCodeSequence",
        ),
    ),
    SEG: (
        (
            "ImageType",
            "SegmentationType",
            "SegmentSequence",
            "NumberOfFrames",
            "SharedFunctionalGroupsSequence",
            "PerFrameFunctionalGroupsSequence",
            "DimensionOrganizationSequence",
            "DimensionIndexSequence",
            "ContentLabel",
            "InstanceNumber",
            "Manufacturer",
            "ManufacturerModelName",
            "SoftwareVersions",
            "DeviceSerialNumber",
            *IMAGE_PIXEL,
        ),
        ("ContentDescription", "ContentDate", "ContentTime"),
    ),
    CT: (
        ("ImageType", "FrameOfReferenceUID", "RescaleIntercept", "RescaleSlope", *IMAGE_PIXEL),
        ("InstanceNumber", "KVP", "AcquisitionNumber", "SliceThickness"),
    ),
    **dict.fromkeys(
        (ENHANCED_CT, LEGACY_CT),
        (
            (
                "ImageType",
                "FrameOfReferenceUID",
                "NumberOfFrames",
                "ContentDate",
                "ContentTime",
                "SharedFunctionalGroupsSequence",
                "PerFrameFunctionalGroupsSequence",
                *IMAGE_PIXEL,
            ),
            ("InstanceNumber",),
        ),
    ),
}
#: functional group macros: their attributes (all Type 1 where the macro is present; Slice
#: Thickness where the image has a frame of reference) and how many values each takes
MACROS = {
    "PixelMeasuresSequence": (("PixelSpacing", 2), ("SliceThickness", 1)),
    "PlaneOrientationSequence": (("ImageOrientationPatient", 6),),
    "PlanePositionSequence": (("ImagePositionPatient", 3),),
    "PixelValueTransformationSequence": (("RescaleIntercept", 1), ("RescaleSlope", 1)),
    "FrameVOILUTSequence": (("WindowCenter", 0), ("WindowWidth", 0)),
}
#: top-level attributes that take one value or a fixed number of them (0: one or more)
MULTIPLICITY = (
    ("InstanceNumber", 1),
    *MACROS["PixelMeasuresSequence"],
    *MACROS["PlaneOrientationSequence"],
    *MACROS["PlanePositionSequence"],
    *MACROS["PixelValueTransformationSequence"],
)
#: Image Plane module (CT, MR, PT images): Type 1 where the IOD includes it
IMAGE_PLANE = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient")
PLANE_IODS = {CT, "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128"}


class GateRefused(ValueError, EdgeimgError):
    """An output object failed the gate; it was not written and will not be sent."""


def check_output(ds: Dataset, sources: Sequence[Dataset]) -> None:
    """Raise GateRefused naming the first problem of `ds` as an output made from `sources`."""
    problems = list(problems_of(ds, sources))
    if problems:
        kind = _kind(ds)
        raise GateRefused(f"output {kind} {ds.get('SOPInstanceUID', '?')} refused: {problems[0]}")


def problems_of(ds: Dataset, sources: Sequence[Dataset]) -> Iterator[str]:
    """Every reason `ds` would fail where a PACS or viewer looks (empty when it passes)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    type1, type2 = REQUIRED.get(sop_class, ((), ()))
    yield from _required(ds, (*COMMON_1, *type1), (*COMMON_2, *type2))
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
        value = ds.get(keyword)
        if value and not UID(str(value)).is_valid:
            yield f"{keyword} is not a valid UID"
    if sop_class in PLANE_IODS:
        yield from _required(ds, IMAGE_PLANE, ())
    yield from _multiplicity(ds, MULTIPLICITY, "")
    yield from _plane(ds, "")
    if sop_class == SEG:
        yield from _seg_geometry(ds)
    yield from _functional_groups(ds)
    if str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" and not (
        ds.get("DeidentificationMethod") or ds.get("DeidentificationMethodCodeSequence")
    ):
        yield "DeidentificationMethod (Type 1C) is missing: PatientIdentityRemoved is YES"
    yield from _pixels(ds)
    yield from _references(ds, sources)


def _required(ds: Dataset, type1: Sequence[str], type2: Sequence[str]) -> Iterator[str]:
    for keyword in type1:
        if keyword not in ds:
            yield f"{keyword} (Type 1) is missing"
        elif ds[keyword].is_empty:
            yield f"{keyword} (Type 1) is empty"
    for keyword in type2:
        if keyword not in ds:
            yield f"{keyword} (Type 2) is missing"


def _plane(item: Dataset, where: str) -> Iterator[str]:
    """Orientation as two orthogonal unit vectors, positive pixel spacing, finite positions."""
    orientation = item.get("ImageOrientationPatient")
    if orientation is not None and not orientation == "":
        cosines = _numbers(orientation)
        if cosines is None or cosines.shape != (6,):
            yield f"{where}ImageOrientationPatient is not six numbers"
        else:
            row, col = cosines[:3], cosines[3:]
            if not (
                np.isclose(np.linalg.norm(row), 1, atol=1e-3)
                and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
                and abs(float(row @ col)) < 1e-3
            ):
                yield f"{where}ImageOrientationPatient is not two orthogonal unit vectors"
    spacing = item.get("PixelSpacing")
    if spacing is not None and not spacing == "":
        values = _numbers(spacing)
        if values is None or len(values) != 2 or min(values) <= 0:
            yield f"{where}PixelSpacing must be two positive numbers"
    position = item.get("ImagePositionPatient")
    if position is not None and not position == "":
        values = _numbers(position)
        if values is None or len(values) != 3 or not np.isfinite(values).all():
            yield f"{where}ImagePositionPatient must be three finite numbers"


def _multiplicity(item: Dataset, expected: Sequence[tuple[str, int]], where: str) -> Iterator[str]:
    """Attributes that are present hold as many values as their definition says."""
    for keyword, count in expected:
        value = item.get(keyword)
        if value is None or value == "":
            continue
        found = len(_values(value))
        if (count and found != count) or (not count and found < 1):
            yield f"{where}{keyword} has {found} value(s), expected {count or 'one or more'}"


def _functional_groups(ds: Dataset) -> Iterator[str]:
    """Every macro in the shared and per-frame groups holds its attributes, with values."""
    with_reference = "FrameOfReferenceUID" in ds
    groups = [("shared ", item) for item in ds.get("SharedFunctionalGroupsSequence") or []]
    groups += [
        (f"frame {number} ", item)
        for number, item in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or [], start=1)
    ]
    for where, group in groups:
        for macro, attributes in MACROS.items():
            for item in group.get(macro) or []:
                needed = [k for k, _ in attributes if k != "SliceThickness" or with_reference]
                for problem in _required(item, needed, ()):
                    yield f"{where}{macro}: {problem}"
                    return
                yield from _multiplicity(item, attributes, f"{where}{macro}: ")
                yield from _plane(item, where)


def _values(value: object) -> list:
    """A value as a list of its values (a single value is a list of one)."""
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _numbers(value: object) -> np.ndarray | None:
    """The values as floats, or None when one is not a number."""
    try:
        return np.asarray([float(v) for v in _values(value)], dtype=float)
    except (TypeError, ValueError):
        return None


def _seg_geometry(ds: Dataset) -> Iterator[str]:
    """Shared pixel measures and orientation, one plane position per frame (in a FoR)."""
    frames = frame_count(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames:
        yield f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {frames} frames"
    if "FrameOfReferenceUID" not in ds:
        return
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    measures = (shared.get("PixelMeasuresSequence") or [None])[0]
    if measures is None:
        yield "shared PixelMeasuresSequence is missing"
    else:
        yield from _required(measures, ("PixelSpacing", "SliceThickness"), ())
        yield from _plane(measures, "shared ")
    orientation = (shared.get("PlaneOrientationSequence") or [None])[0]
    if orientation is None:
        yield "shared PlaneOrientationSequence is missing"
    else:
        yield from _required(orientation, ("ImageOrientationPatient",), ())
        yield from _plane(orientation, "shared ")
    for number, item in enumerate(per_frame, start=1):
        position = (item.get("PlanePositionSequence") or [None])[0]
        if position is None or not position.get("ImagePositionPatient"):
            yield f"frame {number} has no PlanePositionSequence/ImagePositionPatient"
            return
        yield from _plane(position, f"frame {number} ")


def _pixels(ds: Dataset) -> Iterator[str]:
    """Native pixel data exactly as long as rows x columns x frames x samples x bits."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        bits = int(ds.Rows) * int(ds.Columns) * frame_count(ds) * int(ds.SamplesPerPixel)
        bits *= int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return  # the required-attribute checks have said what is missing
    expected = (bits + 7) // 8
    actual = len(ds.PixelData)
    if actual not in (expected, expected + 1):
        yield f"PixelData holds {actual} bytes, its attributes say {expected}"


def _references(ds: Dataset, sources: Sequence[Dataset]) -> Iterator[str]:
    """Every instance the object references is one of its sources (or itself), with a frame
    number that source has, or one its sources reference themselves (a derived copy keeps its
    source's own references: a localizer, the images a legacy conversion came from); a
    predecessor document (a revised SR) may name earlier outputs."""
    frames = {str(source.SOPInstanceUID): frame_count(source) for source in sources}
    frames[str(ds.get("SOPInstanceUID", ""))] = frame_count(ds)
    inherited: set[str] | None = None  # walked only when needed: it reads every source whole
    for item in _referencing_items(ds):
        uid = str(item.ReferencedSOPInstanceUID)
        if uid not in frames and inherited is None:
            inherited = {
                str(each.ReferencedSOPInstanceUID)
                for source in sources
                for each in _referencing_items(source)
            }
        if uid not in frames and uid not in (inherited or ()):
            yield f"references instance {uid}, which is not one of its sources"
            return
        numbers = item.get("ReferencedFrameNumber")
        if numbers is None or numbers == "" or uid not in frames:
            continue
        for number in numbers if isinstance(numbers, list) else [numbers]:
            if not 1 <= int(number) <= frames[uid]:
                yield f"references frame {number} of instance {uid}, which has {frames[uid]}"
                return


def _referencing_items(ds: Dataset) -> Iterator[Dataset]:
    """Items holding a ReferencedSOPInstanceUID, anywhere but under predecessor documents.

    Only sequences are looked into, so only they are turned into data elements (a raw one, or
    an implicit VR one whose VR is not known yet); an SR is hundreds of small items, so each
    item's elements are scanned as stored and only its sequences are put in tag order.
    """
    candidates = sorted(
        (element.tag, element)
        for element in ds.values()
        if element.VR in ("SQ", "UN", None) and element.tag != PREDECESSORS
    )
    for tag, raw in candidates:
        element = ds[tag] if isinstance(raw, RawDataElement) else raw
        if element.VR != "SQ":
            continue
        for item in element.value:
            if REFERENCED_SOP_INSTANCE in item.keys():
                yield item
            yield from _referencing_items(item)


def _kind(ds: Dataset) -> str:
    return {SEG: "SEG", COMPREHENSIVE_3D_SR: "SR"}.get(str(ds.get("SOPClassUID", "")), "image")
