"""The frames of source images as writers see them: one entry per frame, geometry included.

A classic CT slice is one frame with its geometry at the top level; an enhanced (or legacy
converted enhanced) image holds many frames whose geometry lives in the shared and per-frame
functional groups. Writers reference frames, not files: an SR names frame 7 of an enhanced
image with a Referenced Frame Number, a SEG takes its pixel measures from whichever level the
source used. Values that are empty (legal for Type 2), malformed or absent read as None, so a
writer can decide what to leave out or which attribute to name in a refusal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from edgeimg.dicom.geometry import geometry

SLICE_THICKNESS = "SliceThickness"


@dataclass(frozen=True)
class Frame:
    """One frame of a source image: which image and frame, and where it lies (None: unknown)."""

    source: Dataset
    number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None

    @property
    def sop_instance_uid(self) -> str:
        return str(self.source.SOPInstanceUID)

    @property
    def key(self) -> tuple[str, int | None]:
        """How findings name this frame: (SOP Instance UID, frame number or None)."""
        return (self.sop_instance_uid, self.number)


def frame_count(ds: Dataset) -> int:
    """Frames in an instance; a missing or malformed NumberOfFrames means one."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def single_int(value: object) -> int | None:
    """One integer, or None for an empty, multi-valued or malformed value."""
    if value is None or value == "" or isinstance(value, list | tuple | MultiValue):
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def is_multiframe(ds: Dataset) -> bool:
    """Whether frames of `ds` are referenced by number: its IOD has the Multi-frame module
    (NumberOfFrames), as every enhanced image does; a classic image is referenced whole."""
    return "NumberOfFrames" in ds


def frames_of(ds: Dataset) -> list[Frame]:
    """Every frame of one source instance, in frame order."""
    geo = geometry(ds)
    count = frame_count(ds)
    positions = list(geo.positions) + [None] * (count - len(geo.positions))
    multiframe = is_multiframe(ds)
    thickness = slice_thickness(ds)
    return [
        Frame(
            source=ds,
            number=index + 1 if multiframe else None,
            position=positions[index],
            orientation=geo.orientation,
            pixel_spacing=geo.pixel_spacing,
            slice_thickness=thickness,
        )
        for index in range(count)
    ]


def slice_thickness(ds: Dataset) -> float | None:
    """SliceThickness from the shared Pixel Measures, the first frame's, or the top level."""
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(group) or []
        measures = (items[0].get("PixelMeasuresSequence") or []) if items else []
        if measures:
            value = _positive(measures[0].get(SLICE_THICKNESS))
            if value is not None:
                return value
    return _positive(ds.get(SLICE_THICKNESS))


def _positive(value: object) -> float | None:
    """A single positive finite number, or None for empty, multi-valued or malformed values."""
    if value is None or value == "" or isinstance(value, list | tuple):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def slice_spacing(frames: list[Frame]) -> float | None:
    """The smallest non-zero distance between adjacent frame positions along the normal."""
    if len(frames) < 2 or frames[0].orientation is None:
        return None
    row, col = frames[0].orientation[:3], frames[0].orientation[3:]
    normal = (
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    )
    if any(frame.position is None for frame in frames):
        return None
    along = sorted(
        sum(p * n for p, n in zip(frame.position or (), normal, strict=False)) for frame in frames
    )
    gaps = [b - a for a, b in zip(along, along[1:], strict=False) if b - a > 1e-3]
    return round(min(gaps), 6) if gaps else None
