"""Where the frames of one instance lie in patient space, from classic or enhanced attributes.

Series assembly orders slices by these positions; malformed values count as absent here, so
that assembly can say what is wrong instead of crashing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from edgeimg.dicom.attributes import first_item, floats, get_value, int_or_none, sequence
from edgeimg.dicom.validate import MAX_FRAMES


@dataclass(frozen=True)
class Geometry:
    """Where the frames of one instance are in patient space (LPS, mm)."""

    positions: tuple[tuple[float, float, float] | None, ...]
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None


def geometry(ds: Dataset) -> Geometry:
    """Plane geometry from classic attributes or enhanced multi-frame functional groups.

    Malformed values (wrong count, not numbers, not finite) count as absent rather than
    failing, so that series assembly can report them instead of crashing.
    """
    frames = int_or_none(ds, "NumberOfFrames") or 1
    frames = min(max(frames, 1), MAX_FRAMES)
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = sequence(ds, "PerFrameFunctionalGroupsSequence")
    if len(per_frame) != frames:
        per_frame = []
    first = per_frame[0] if per_frame else None

    orientation = _functional(first, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
    orientation = floats(orientation, 6) if orientation is not None else None
    if orientation is None:
        orientation = floats(get_value(ds, "ImageOrientationPatient"), 6)
    spacing = _functional(first, shared, "PixelMeasuresSequence", "PixelSpacing")
    spacing = floats(spacing, 2) if spacing is not None else None
    if spacing is None:
        spacing = floats(get_value(ds, "PixelSpacing"), 2)

    positions: tuple = ()
    if per_frame:
        positions = tuple(
            floats(_functional(item, shared, "PlanePositionSequence", "ImagePositionPatient"), 3)
            for item in per_frame
        )
    if not per_frame or (frames == 1 and positions[0] is None):
        positions = _classic_positions(ds, frames, orientation)
    return Geometry(positions=positions, orientation=orientation, pixel_spacing=spacing)


def _classic_positions(
    ds: Dataset, frames: int, orientation: tuple[float, ...] | None
) -> tuple[tuple[float, float, float] | None, ...]:
    first = floats(get_value(ds, "ImagePositionPatient"), 3)
    rest: list[tuple[float, float, float] | None] = [None] * (frames - 1)
    offsets = get_value(ds, "GridFrameOffsetVector")
    if first is not None and orientation is not None and frames > 1:
        values = floats(offsets, frames)
        if values is not None:
            normal = np.cross(orientation[:3], orientation[3:])
            origin = np.array(first)
            rest = [floats(origin + (off - values[0]) * normal, 3) for off in values[1:]]
    return (first, *rest)


def _functional(item: Dataset | None, shared: Dataset | None, sequence: str, keyword: str) -> Any:
    for group in (item, shared):
        if group is None:
            continue
        macro = first_item(group, sequence)
        if macro is not None and keyword in macro:
            return get_value(macro, keyword)
    return None
