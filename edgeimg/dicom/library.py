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

import highdicom as hd
from pydicom.sr.codedict import codes

from edgeimg.dicom.frames import Frame

SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")
PIXELS = hd.sr.CodedConcept("{pixels}", "UCUM", "Pixels")
DIRECTION = hd.sr.CodedConcept("{-1:1}", "UCUM", "{-1:1}")
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


def image_library(frames: Sequence[Frame]) -> hd.sr.ContainerContentItem:
    """TID 1600: one group per modality and frame of reference, one entry per frame."""
    library = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=_CONTAINS)
    library.ContentSequence = hd.sr.ContentSequence()
    groups: dict[tuple[str, str | None], list[hd.sr.ImageContentItem]] = {}
    for frame in frames:
        key = (_modality(frame), _frame_of_reference(frame))
        groups.setdefault(key, []).append(_entry(frame))
    for (_, frame_of_reference), entries in groups.items():
        group = hd.sr.ContainerContentItem(
            name=codes.DCM.ImageLibraryGroup, relationship_type=_CONTAINS
        )
        group.ContentSequence = hd.sr.ContentSequence()
        if frame_of_reference:
            group.ContentSequence.append(_uid(frame_of_reference))
        group.ContentSequence.extend(entries)
        library.ContentSequence.append(group)
    return library


def _entry(frame: Frame) -> hd.sr.ImageContentItem:
    source = frame.source
    item = hd.sr.ImageContentItem(
        name=SOURCE,
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=frame.number,
        relationship_type=_CONTAINS,
    )
    item.ContentSequence = hd.sr.ContentSequence(_descriptors(frame))
    return item


def _descriptors(frame: Frame) -> list[hd.sr.ContentItem]:
    """TID 1602/1604 descriptors for what the frame's source says of it."""
    modality = _modality(frame)
    items: list[hd.sr.ContentItem] = []
    if modality in _MODALITIES:
        items.append(
            hd.sr.CodeContentItem(
                name=codes.DCM.Modality, value=_MODALITIES[modality], relationship_type=_ACQ
            )
        )
    if _frame_of_reference(frame):
        items.append(_uid(_frame_of_reference(frame)))
    items += [
        _number(codes.DCM.PixelDataRows, int(frame.source.Rows), PIXELS),
        _number(codes.DCM.PixelDataColumns, int(frame.source.Columns), PIXELS),
    ]
    if modality not in CROSS_SECTIONAL:
        return items
    if frame.pixel_spacing is not None:
        items.append(_number(codes.DCM.HorizontalPixelSpacing, frame.pixel_spacing[1]))
        items.append(_number(codes.DCM.VerticalPixelSpacing, frame.pixel_spacing[0]))
    if frame.slice_thickness is not None:
        items.append(_number(codes.DCM.SliceThickness, frame.slice_thickness))
    if frame.position is not None:
        items += [
            _number(name, value) for name, value in zip(_POSITION, frame.position, strict=True)
        ]
    if frame.orientation is not None:
        items += [
            _number(name, value, DIRECTION)
            for name, value in zip(_ORIENTATION, frame.orientation, strict=True)
        ]
    return items


def _modality(frame: Frame) -> str:
    return str(frame.source.get("Modality", "") or "")


def _frame_of_reference(frame: Frame) -> str | None:
    return str(frame.source.get("FrameOfReferenceUID", "") or "") or None


def _uid(value: str) -> hd.sr.UIDRefContentItem:
    return hd.sr.UIDRefContentItem(
        name=codes.DCM.FrameOfReferenceUID, value=value, relationship_type=_ACQ
    )


def _number(
    name: object, value: float, unit: object = codes.UCUM.Millimeter
) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=float(value), unit=unit, relationship_type=_ACQ)
