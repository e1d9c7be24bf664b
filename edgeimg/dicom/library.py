"""The SR's Image Library (TID 1600), built per frame from what each source actually holds.

highdicom builds library entries from whole datasets and needs the classic geometry at the top
level (PixelSpacing, ImageOrientationPatient, ImagePositionPatient and a numeric
SliceThickness): an enhanced image keeps those in functional groups, and a legal CT may leave
SliceThickness empty (Type 2). Entry descriptors (TID 1602) are optional, so each entry here
names its image (and frame, for multi-frame sources) and carries the descriptors that are known,
leaving out the ones the source does not give rather than inventing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom.sr.codedict import codes

from edgeimg.dicom.frames import Frame

SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")
PIXELS = hd.sr.CodedConcept("{pixels}", "UCUM", "Pixels")
DIRECTION = hd.sr.CodedConcept("{-1:1}", "UCUM", "{-1:1}")
MM = codes.UCUM.Millimeter
CROSS_SECTIONAL = ("CT", "MR", "PT")
_MODALITIES = {
    getattr(codes.cid29, name).value: getattr(codes.cid29, name) for name in codes.cid29.dir()
}
_POSITION = (
    codes.DCM.ImagePositionPatientX,
    codes.DCM.ImagePositionPatientY,
    codes.DCM.ImagePositionPatientZ,
)
_ORIENTATION = (
    codes.DCM.ImageOrientationPatientRowX,
    codes.DCM.ImageOrientationPatientRowY,
    codes.DCM.ImageOrientationPatientRowZ,
    codes.DCM.ImageOrientationPatientColumnX,
    codes.DCM.ImageOrientationPatientColumnY,
    codes.DCM.ImageOrientationPatientColumnZ,
)
_ACQ = hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT
_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
#: descriptors that name one image and so never go on the group
_PER_IMAGE = {(name, MM) for name in _POSITION}


def image_library(frames: Sequence[Frame]) -> hd.sr.ContainerContentItem:
    """TID 1600: one group per modality and frame of reference, one entry per frame.

    A descriptor every entry of a group gives alike (modality, size, spacing, thickness,
    orientation: a series' own) is said once, on the group, which TID 1600 provides for; an
    entry keeps its position and whatever differs. A library entry of a CT slice was 17 content
    items, and building them was most of an SR's cost per finding.
    """
    library = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=_CONTAINS)
    library.ContentSequence = hd.sr.ContentSequence()
    groups: dict[tuple[str, str | None], list[Frame]] = {}
    for frame in frames:
        groups.setdefault((_modality(frame), _frame_of_reference(frame)), []).append(frame)
    for members in groups.values():
        described = [_descriptors(frame) for frame in members]
        shared = [
            key
            for key in described[0]
            if key not in _PER_IMAGE and all(d.get(key) == described[0][key] for d in described)
        ]
        group = hd.sr.ContainerContentItem(
            name=codes.DCM.ImageLibraryGroup, relationship_type=_CONTAINS
        )
        group.ContentSequence = hd.sr.ContentSequence(
            [_item(key, described[0][key]) for key in shared]
        )
        for frame, descriptors in zip(members, described, strict=True):
            own = [_item(key, value) for key, value in descriptors.items() if key not in shared]
            group.ContentSequence.append(_entry(frame, own))
        library.ContentSequence.append(group)
    return library


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
        item.ContentSequence = hd.sr.ContentSequence(descriptors)
    return item


def _descriptors(frame: Frame) -> dict[Any, Any]:
    """TID 1602/1604 descriptors for what the frame's source says of it: (concept, unit) or
    "modality" / "frame of reference" to the value, in the order the entry lists them."""
    modality = _modality(frame)
    found: dict[Any, Any] = {}
    if modality in _MODALITIES:
        found["modality"] = _MODALITIES[modality]
    if _frame_of_reference(frame):
        found["frame of reference"] = _frame_of_reference(frame)
    found[(codes.DCM.PixelDataRows, PIXELS)] = int(frame.source.Rows)
    found[(codes.DCM.PixelDataColumns, PIXELS)] = int(frame.source.Columns)
    if modality not in CROSS_SECTIONAL:
        return found
    if frame.pixel_spacing is not None:
        found[(codes.DCM.HorizontalPixelSpacing, MM)] = float(frame.pixel_spacing[1])
        found[(codes.DCM.VerticalPixelSpacing, MM)] = float(frame.pixel_spacing[0])
    if frame.slice_thickness is not None:
        found[(codes.DCM.SliceThickness, MM)] = float(frame.slice_thickness)
    for name, value in zip(_POSITION, frame.position or (), strict=False):
        found[(name, MM)] = float(value)
    for name, value in zip(_ORIENTATION, frame.orientation or (), strict=False):
        found[(name, DIRECTION)] = float(value)
    return found


def _item(key: Any, value: Any) -> hd.sr.ContentItem:
    """The content item of one descriptor (see `_descriptors` for the keys)."""
    if key == "modality":
        return hd.sr.CodeContentItem(name=codes.DCM.Modality, value=value, relationship_type=_ACQ)
    if key == "frame of reference":
        return _uid(value)
    name, unit = key
    return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=_ACQ)


def _modality(frame: Frame) -> str:
    return str(frame.source.get("Modality", "") or "")


def _frame_of_reference(frame: Frame) -> str | None:
    return str(frame.source.get("FrameOfReferenceUID", "") or "") or None


def _uid(value: str) -> hd.sr.UIDRefContentItem:
    return hd.sr.UIDRefContentItem(
        name=codes.DCM.FrameOfReferenceUID, value=value, relationship_type=_ACQ
    )
