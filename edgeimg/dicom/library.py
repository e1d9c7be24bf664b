"""The SR's Image Library (TID 1600), built per frame from what each source actually holds.

highdicom builds library entries from whole datasets and needs the classic geometry at the top
level (PixelSpacing, ImageOrientationPatient, ImagePositionPatient and a numeric
SliceThickness): an enhanced image keeps those in functional groups, and a legal CT may leave
SliceThickness empty (Type 2). Entry descriptors (TID 1602) are optional, so each entry here
names its image (and frame, for multi-frame sources) and carries the descriptors that are known,
leaving out the ones the source does not give rather than inventing them.

The library is most of an SR's content items, and every item costs to build and to write:
descriptors are keyed by plain names (a highdicom CodedConcept hashes through pydicom attribute
access) and their concepts are built once, here, then shared by every item that names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from edgeimg.dicom.frames import Frame


class SharedConcept(hd.sr.CodedConcept):
    """A CodedConcept built once and named by many items. Every ContentSequence that holds an
    item hashes the item's name (through pydicom attribute access, twice per item); a shared
    concept keeps the hash CodedConcept gives it, computed once."""

    def __hash__(self) -> int:
        cached = self.__dict__.get("_shared_hash")
        if cached is None:
            cached = super().__hash__()
            self.__dict__["_shared_hash"] = cached
        return cached


def concept(code: Code) -> SharedConcept:
    """A pydicom Code as the CodedConcept highdicom would otherwise build anew per item."""
    return SharedConcept.from_code(code)


SOURCE = SharedConcept("260753009", "SCT", "Source")
PIXELS = SharedConcept("{pixels}", "UCUM", "Pixels")
DIRECTION = SharedConcept("{-1:1}", "UCUM", "{-1:1}")
MM = concept(codes.UCUM.Millimeter)
CROSS_SECTIONAL = ("CT", "MR", "PT")
_LIBRARY = concept(codes.DCM.ImageLibrary)
_GROUP = concept(codes.DCM.ImageLibraryGroup)
_MODALITY = concept(codes.DCM.Modality)
_FRAME_OF_REFERENCE = concept(codes.DCM.FrameOfReferenceUID)
_POSITION = ("position x", "position y", "position z")
_ORIENTATION = ("row x", "row y", "row z", "column x", "column y", "column z")
_DCM = codes.DCM
#: numeric descriptors (TID 1602/1604) by name: their concept and unit
_NUMERIC = {
    name: (concept(code), unit)
    for name, code, unit in (
        ("rows", _DCM.PixelDataRows, PIXELS),
        ("columns", _DCM.PixelDataColumns, PIXELS),
        ("horizontal spacing", _DCM.HorizontalPixelSpacing, MM),
        ("vertical spacing", _DCM.VerticalPixelSpacing, MM),
        ("slice thickness", _DCM.SliceThickness, MM),
        ("position x", _DCM.ImagePositionPatientX, MM),
        ("position y", _DCM.ImagePositionPatientY, MM),
        ("position z", _DCM.ImagePositionPatientZ, MM),
        ("row x", _DCM.ImageOrientationPatientRowX, DIRECTION),
        ("row y", _DCM.ImageOrientationPatientRowY, DIRECTION),
        ("row z", _DCM.ImageOrientationPatientRowZ, DIRECTION),
        ("column x", _DCM.ImageOrientationPatientColumnX, DIRECTION),
        ("column y", _DCM.ImageOrientationPatientColumnY, DIRECTION),
        ("column z", _DCM.ImageOrientationPatientColumnZ, DIRECTION),
    )
}
_MODALITIES = {getattr(codes.cid29, name).value for name in codes.cid29.dir()}
_ACQ = hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT
_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def image_library(frames: Sequence[Frame]) -> hd.sr.ContainerContentItem:
    """TID 1600: one group per modality and frame of reference, one entry per frame.

    A descriptor every entry of a group gives alike (modality, size, spacing, thickness,
    orientation, and the position components a series shares, such as X and Y of an axial
    series) is said once, on the group, which TID 1600 provides for; an entry keeps whatever
    differs (its Z). A library entry of a CT slice was 17 content items; it is now 2 and writes
    in less than half the bytes, with nothing left out.
    """
    groups: dict[tuple[str, str | None], list[Frame]] = {}
    for frame in frames:
        groups.setdefault((_modality(frame), _frame_of_reference(frame)), []).append(frame)
    library = hd.sr.ContainerContentItem(name=_LIBRARY, relationship_type=_CONTAINS)
    library.ContentSequence = [_group(members) for members in groups.values()]
    return library


def _group(members: Sequence[Frame]) -> hd.sr.ContainerContentItem:
    """One library group: the descriptors its entries share, then its entries.

    Content is handed to highdicom as plain lists: a content item wraps whatever it is given
    in a ContentSequence of its own, so a ContentSequence built here would be built twice.
    """
    described = [_descriptors(frame) for frame in members]
    first = described[0]
    shared = [key for key in first if all(d.get(key) == first[key] for d in described)]
    content = [_item(key, first[key]) for key in shared]
    for frame, descriptors in zip(members, described, strict=True):
        own = [_item(key, value) for key, value in descriptors.items() if key not in shared]
        content.append(_entry(frame, own))
    group = hd.sr.ContainerContentItem(name=_GROUP, relationship_type=_CONTAINS)
    group.ContentSequence = content
    return group


def _entry(frame: Frame, descriptors: list[hd.sr.ContentItem]) -> hd.sr.ImageContentItem:
    source = frame.source
    item = hd.sr.ImageContentItem(
        name=SOURCE,
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=frame.number,
        relationship_type=_CONTAINS,
    )
    if descriptors:
        item.ContentSequence = descriptors
    return item


def _descriptors(frame: Frame) -> dict[str, Any]:
    """TID 1602/1604 descriptors for what the frame's source says of it, by name (see
    `_NUMERIC`, plus "modality" and "frame of reference"), in the order an entry lists them."""
    modality = _modality(frame)
    found: dict[str, Any] = {}
    if modality in _MODALITIES:
        found["modality"] = modality
    if _frame_of_reference(frame):
        found["frame of reference"] = _frame_of_reference(frame)
    found["rows"] = int(frame.source.Rows)
    found["columns"] = int(frame.source.Columns)
    if modality not in CROSS_SECTIONAL:
        return found
    if frame.pixel_spacing is not None:
        found["horizontal spacing"] = float(frame.pixel_spacing[1])
        found["vertical spacing"] = float(frame.pixel_spacing[0])
    if frame.slice_thickness is not None:
        found["slice thickness"] = float(frame.slice_thickness)
    found.update(zip(_POSITION, map(float, frame.position or ()), strict=False))
    found.update(zip(_ORIENTATION, map(float, frame.orientation or ()), strict=False))
    return found


def _item(key: str, value: Any) -> hd.sr.ContentItem:
    """The content item of one descriptor (see `_descriptors` for the keys)."""
    if key == "modality":
        return hd.sr.CodeContentItem(
            name=_MODALITY, value=_modality_concept(value), relationship_type=_ACQ
        )
    if key == "frame of reference":
        return hd.sr.UIDRefContentItem(
            name=_FRAME_OF_REFERENCE, value=value, relationship_type=_ACQ
        )
    name, unit = _NUMERIC[key]
    return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=_ACQ)


@cache
def _modality_concept(modality: str) -> hd.sr.CodedConcept:
    """CID 29's concept for a modality, built once per process."""
    return next(
        concept(code)
        for code in (getattr(codes.cid29, name) for name in codes.cid29.dir())
        if code.value == modality
    )


def _modality(frame: Frame) -> str:
    return str(frame.source.get("Modality", "") or "")


def _frame_of_reference(frame: Frame) -> str | None:
    return str(frame.source.get("FrameOfReferenceUID", "") or "") or None
