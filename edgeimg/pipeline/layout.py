"""The part of a header that grouping a series needs, and a header rebuilt from it alone.

Identity (UIDs, SOP class, modality, body part) plus the `layout`: instance and series numbers,
size, frames, plane orientation, pixel spacing and one position per frame (from classic
attributes or the functional groups). No patient data. `serve`'s queue keeps it per instance
(as JSON) so its worker groups a series without opening a file, and `scan`'s workers send it
back instead of the whole header, which costs as much to unpickle as to read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset

from edgeimg.dicom.frames import single_int
from edgeimg.dicom.geometry import geometry

#: the identity attributes a grouping header carries (a row keeps them in columns of its own)
IDENTITY = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "SOPClassUID",
    "Modality",
    "BodyPartExamined",
)
#: integer attributes a layout keeps as they are (when one sane integer)
_COUNTS = ("SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames")


def layout_of(ds: Dataset) -> dict[str, Any]:
    """What ordering a series needs of one instance (JSON-able)."""
    geo = geometry(ds)
    layout: dict[str, Any] = {key: _count(ds, key) for key in _COUNTS if key in ds}
    layout["ImageOrientationPatient"] = geo.orientation
    layout["PixelSpacing"] = geo.pixel_spacing
    layout["ImagePositionPatient"] = geo.positions
    return layout


def grouping_header(
    identity: Mapping[str, Any], layout: Mapping[str, Any], filename: str
) -> Dataset:
    """A header that `group_series` and `accepts` read as they read the file's own."""
    header = Dataset()
    for keyword in IDENTITY:
        if identity.get(keyword):
            setattr(header, keyword, str(identity[keyword]))
    for keyword in _COUNTS:
        if layout.get(keyword) is not None:
            setattr(header, keyword, layout[keyword])
    _place(header, layout)
    header.filename = filename
    return header


def identity_of(ds: Dataset) -> dict[str, str | None]:
    """The identity attributes of one instance, as strings (None where absent)."""
    values = {keyword: ds.get(keyword) for keyword in IDENTITY}
    return {keyword: None if value is None else str(value) for keyword, value in values.items()}


def _count(ds: Dataset, keyword: str) -> int | None:
    try:
        return single_int(ds.get(keyword))
    except Exception:  # a malformed value orders as a missing one, as in group_series
        return None


def _place(header: Dataset, layout: Mapping[str, Any]) -> None:
    """Geometry as `geometry()` reads it back: classic attributes for a single frame,
    functional groups (shared orientation and spacing, a position per frame) for several."""
    orientation = layout.get("ImageOrientationPatient")
    spacing = layout.get("PixelSpacing")
    positions = layout.get("ImagePositionPatient") or []
    if len(positions) <= 1:
        for keyword, value in (
            ("ImageOrientationPatient", orientation),
            ("PixelSpacing", spacing),
            ("ImagePositionPatient", positions[0] if positions else None),
        ):
            if value is not None:
                setattr(header, keyword, list(value))
        return
    shared = Dataset()
    if orientation is not None:
        shared.PlaneOrientationSequence = [_item("ImageOrientationPatient", orientation)]
    if spacing is not None:
        shared.PixelMeasuresSequence = [_item("PixelSpacing", spacing)]
    header.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for position in positions:
        frame = Dataset()
        if position is not None:
            frame.PlanePositionSequence = [_item("ImagePositionPatient", position)]
        frames.append(frame)
    header.PerFrameFunctionalGroupsSequence = frames
    header.NumberOfFrames = len(positions)


def _item(keyword: str, value: Sequence[float]) -> Dataset:
    item = Dataset()
    setattr(item, keyword, list(value))
    return item
