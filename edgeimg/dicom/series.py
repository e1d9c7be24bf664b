"""Assemble instances into ordered series and say what is wrong with them.

Works from headers alone (what `read_header` returns, or a dataset the listener received) so
that slices can be ordered and checked before anything is decoded; decoded `Image`s work too.
Slices are ordered by their distance along the slice normal, ``dot(ImagePositionPatient,
row_dir x col_dir)``, which holds for oblique planes and gantry tilt, where the position moves
along the table rather than the normal but the distance along the normal still increases.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
from pydicom.dataset import Dataset

from edgeimg.dicom.geometry import geometry
from edgeimg.dicom.read import Image

__all__ = ["Series", "group_series"]

GAP_FACTOR = 1.5
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 1e-3
SAME_POSITION_MM = 1e-3
_LISTED = 3


@dataclass
class Series:
    """One series, instances ordered along the slice normal (or by InstanceNumber, file name).

    `slice_positions` are the instances' distances (mm) along the slice normal, in order, or
    None when some instance has no usable position. A series of one multi-frame instance
    (Enhanced or Legacy Converted CT) is checked frame by frame instead: `slice_spacing`, gaps
    and repeated positions come from its per-frame positions. `issues` are human-readable findings;
    `complete` is False when any of them means the volume cannot be trusted as a whole (gaps,
    two slices at one position, mixed geometry, missing positions). Dropping a re-sent copy of
    an instance is reported but does not make the series incomplete.
    """

    uid: str
    study_uid: str | None
    modality: str | None
    instances: list[Image | Dataset]
    slice_positions: list[float] | None
    slice_spacing: float | None
    issues: list[str] = field(default_factory=list)
    complete: bool = True


@dataclass
class _Entry:
    item: Image | Dataset
    sop_uid: str | None
    series_uid: str
    study_uid: str | None
    modality: str | None
    series_number: int | None
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    size: tuple[int, int] | None
    filename: str
    frame_positions: tuple[tuple[float, float, float] | None, ...] = ()

    @property
    def label(self) -> str:
        if self.instance_number is not None:
            return f"instance {self.instance_number}"
        return os.path.basename(self.filename) or str(self.sop_uid)


def group_series(images_or_headers: Iterable[Image | Dataset]) -> list[Series]:
    """Group by SeriesInstanceUID, order each series and report its issues.

    Series come back sorted by SeriesNumber, then UID, whatever the input order.
    """
    groups: dict[str, list[_Entry]] = {}
    for item in images_or_headers:
        entry = _entry(item)
        groups.setdefault(entry.series_uid, []).append(entry)
    series = [_assemble(uid, entries) for uid, entries in groups.items()]
    numbers = {uid: entries[0].series_number for uid, entries in groups.items()}
    series.sort(key=lambda s: (numbers[s.uid] is None, numbers[s.uid] or 0, s.uid))
    return series


def _assemble(uid: str, entries: list[_Entry]) -> Series:
    issues: list[str] = []
    blocking = False
    if not uid:
        issues.append(f"missing SeriesInstanceUID on {len(entries)} instance(s)")
        blocking = True
    entries = _drop_duplicate_sops(entries, issues)

    mixed = _mixed_geometry(entries)
    issues.extend(mixed)
    blocking |= bool(mixed)

    reference = _reference_orientation(entries)
    located = all(e.position is not None for e in entries) and reference is not None
    if located:
        normal = np.cross(reference[:3], reference[3:])
        distances = {id(e): float(np.dot(e.position, normal)) for e in entries}
        entries.sort(key=lambda e: (distances[id(e)], *_fallback_key(e)))
        positions: list[float] | None = [distances[id(e)] for e in entries]
    else:
        positions = None
        if len(entries) > 1:
            blocking = True
            entries = _order_without_positions(entries, issues)

    spacing = None
    if len(entries) == 1 and reference is not None:
        spacing, problems = _frame_issues(entries[0], reference)
        issues.extend(problems)
        blocking |= bool(problems)
    elif positions is not None and reference is not None:
        # Gaps are measured among the parallel slices only; a localizer is already reported.
        parallel = [i for i, e in enumerate(entries) if not _tilted(e, reference)]
        if len(parallel) > 1:
            spacing, problems = _spacing_issues(
                [entries[i] for i in parallel], [positions[i] for i in parallel]
            )
            issues.extend(problems)
            blocking |= bool(problems)

    first = entries[0]
    return Series(
        uid=uid,
        study_uid=first.study_uid,
        modality=first.modality,
        instances=[e.item for e in entries],
        slice_positions=positions,
        slice_spacing=spacing,
        issues=issues,
        complete=not blocking,
    )


def _drop_duplicate_sops(entries: list[_Entry], issues: list[str]) -> list[_Entry]:
    """Keep the first copy of each SOP Instance UID (scanners and PACS re-send)."""
    kept: dict[str, _Entry] = {}
    unnamed: list[_Entry] = []
    copies: Counter[str] = Counter()
    for entry in entries:
        if entry.sop_uid is None:
            unnamed.append(entry)
        elif entry.sop_uid in kept:
            copies[entry.sop_uid] += 1
        else:
            kept[entry.sop_uid] = entry
    if copies:
        listed = ", ".join(list(copies)[:_LISTED]) + (", ..." if len(copies) > _LISTED else "")
        issues.append(
            f"duplicates: {sum(copies.values())} extra copy(ies) of {len(copies)} SOP Instance "
            f"UID(s) dropped, kept the first: {listed}"
        )
    if unnamed:
        issues.append(f"{len(unnamed)} instance(s) without SOP Instance UID")
    return [*kept.values(), *unnamed]


def _mixed_geometry(entries: list[_Entry]) -> list[str]:
    """Orientation, matrix size and pixel spacing must agree to stack slices into a volume."""
    issues = []
    sizes = Counter(e.size for e in entries if e.size is not None)
    if len(sizes) > 1:
        issues.append("mixed geometry: image sizes " + _tally(sizes, lambda s: f"{s[0]}x{s[1]}"))
    reference = _reference_orientation(entries)
    if reference is not None:
        odd = [e for e in entries if _tilted(e, reference)]
        if odd:
            issues.append(
                f"mixed geometry: {len(odd)} of {len(entries)} instance(s) have a different "
                f"ImageOrientationPatient ({_labels(odd)}), e.g. a localizer"
            )
    spacings = [e.pixel_spacing for e in entries if e.pixel_spacing is not None]
    if spacings:
        ref = np.maximum(np.median(np.array(spacings), axis=0), 1e-6)
        odd = [
            e
            for e in entries
            if e.pixel_spacing is not None
            and np.max(np.abs(np.subtract(e.pixel_spacing, ref)) / ref) > SPACING_TOLERANCE
        ]
        if odd:
            issues.append(
                f"mixed geometry: {len(odd)} instance(s) have a different PixelSpacing "
                f"({_labels(odd)}); most have {ref[0]:g}x{ref[1]:g} mm"
            )
    return issues


def _tilted(entry: _Entry, reference: tuple[float, ...]) -> bool:
    """True when the entry's orientation differs from the series' reference orientation."""
    if entry.orientation is None:
        return False
    return bool(np.max(np.abs(np.subtract(entry.orientation, reference))) > ORIENTATION_TOLERANCE)


def _reference_orientation(entries: list[_Entry]) -> tuple[float, ...] | None:
    """The most common orientation; the normal used for ordering comes from it."""
    found = Counter(tuple(round(v, 3) for v in e.orientation) for e in entries if e.orientation)
    if not found:
        return None
    common = found.most_common(1)[0][0]
    return next(e.orientation for e in entries if e.orientation and _rounded(e) == common)


def _rounded(entry: _Entry) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in entry.orientation or ())


def _order_without_positions(entries: list[_Entry], issues: list[str]) -> list[_Entry]:
    missing = sum(e.position is None or e.orientation is None for e in entries)
    numbered = all(e.instance_number is not None for e in entries)
    fallback = "InstanceNumber" if numbered else "file name"
    issues.append(
        f"missing position: {missing} of {len(entries)} instance(s) have no usable "
        f"ImagePositionPatient/ImageOrientationPatient; ordered by {fallback}"
    )
    if numbered:
        return sorted(entries, key=_fallback_key)
    return sorted(entries, key=lambda e: (e.filename, e.sop_uid or ""))


def _fallback_key(entry: _Entry) -> tuple[bool, int, str]:
    number = entry.instance_number
    return (number is None, number if number is not None else 0, entry.filename)


def _frame_issues(entry: _Entry, reference: tuple[float, ...]) -> tuple[float | None, list[str]]:
    """Spacing, gaps and repeated positions among the frames of one multi-frame instance."""
    located = [p for p in entry.frame_positions if p is not None]
    if len(entry.frame_positions) < 2:
        return None, []
    if len(located) < len(entry.frame_positions):
        missing = len(entry.frame_positions) - len(located)
        return None, [
            f"missing position: {missing} of {len(entry.frame_positions)} frame(s) of "
            f"{entry.label} have no usable ImagePositionPatient in their Plane Position Sequence"
        ]
    normal = np.cross(reference[:3], reference[3:])
    order = sorted((float(np.dot(p, normal)), k) for k, p in enumerate(located))
    frames = [
        replace(entry, instance_number=None, filename=f"frame {k + 1} of {entry.label}")
        for _, k in order
    ]
    return _spacing_issues(frames, [distance for distance, _ in order])


def _spacing_issues(
    entries: list[_Entry], positions: list[float]
) -> tuple[float | None, list[str]]:
    """Median slice spacing, and gaps (> GAP_FACTOR x median) and repeated positions."""
    steps = np.diff(np.array(positions))
    moving = steps[steps > SAME_POSITION_MM]
    spacing = float(np.median(moving)) if moving.size else None
    issues = []
    same = [i for i, step in enumerate(steps) if step <= SAME_POSITION_MM]
    if same:
        pairs = [f"{entries[i].label} and {entries[i + 1].label}" for i in same[:_LISTED]]
        more = ", ..." if len(same) > _LISTED else ""
        issues.append(
            f"duplicates: {len(same)} pair(s) of slices share a position: "
            f"{'; '.join(pairs)}{more} at {positions[same[0]]:.2f} mm"
        )
    if spacing is not None:
        gaps = [i for i, step in enumerate(steps) if step > GAP_FACTOR * spacing]
        for i in gaps[:_LISTED]:
            missing = max(round(steps[i] / spacing) - 1, 1)
            issues.append(
                f"gap: about {missing} slice(s) missing between {entries[i].label} "
                f"({positions[i]:.2f} mm) and {entries[i + 1].label} ({positions[i + 1]:.2f} mm); "
                f"spacing there {steps[i]:.2f} mm, usual {spacing:.2f} mm"
            )
        if len(gaps) > _LISTED:
            issues.append(f"gap: {len(gaps) - _LISTED} more gap(s) not listed")
    return spacing, issues


def _entry(item: Image | Dataset) -> _Entry:
    if isinstance(item, Image):
        header = item.header
        frames = item.frames
        return _Entry(
            item=item,
            sop_uid=item.sop_instance_uid,
            series_uid=item.series_uid or "",
            study_uid=item.study_uid,
            modality=item.modality,
            series_number=_int(_get(header, "SeriesNumber")),
            instance_number=item.instance_number,
            position=item.position,
            orientation=item.orientation,
            pixel_spacing=item.pixel_spacing,
            size=(int(frames.shape[1]), int(frames.shape[2])),
            filename=item.path or "",
            frame_positions=item.frame_positions,
        )
    if not isinstance(item, Dataset):
        raise TypeError(f"expected Image or pydicom Dataset, got {type(item).__name__}")
    geo = geometry(item)
    rows, cols = _int(_get(item, "Rows")), _int(_get(item, "Columns"))
    filename = getattr(item, "filename", None)
    return _Entry(
        item=item,
        sop_uid=_str(_get(item, "SOPInstanceUID")),
        series_uid=_str(_get(item, "SeriesInstanceUID")) or "",
        study_uid=_str(_get(item, "StudyInstanceUID")),
        modality=_str(_get(item, "Modality")),
        series_number=_int(_get(item, "SeriesNumber")),
        instance_number=_int(_get(item, "InstanceNumber")),
        position=geo.positions[0] if geo.positions else None,
        orientation=geo.orientation,
        pixel_spacing=geo.pixel_spacing,
        size=(rows, cols) if rows is not None and cols is not None else None,
        filename=filename if isinstance(filename, str) else "",
        frame_positions=geo.positions,
    )


def _labels(entries: list[_Entry]) -> str:
    names = [e.label for e in entries[:_LISTED]]
    return ", ".join(names) + (", ..." if len(entries) > _LISTED else "")


def _tally(counts: Counter[tuple[int, int]], fmt: Callable[[tuple[int, int]], str]) -> str:
    return ", ".join(f"{fmt(key)} (n={n})" for key, n in counts.most_common())


def _get(ds: Dataset, keyword: str) -> object:
    """A value, or None when missing or unreadable (ordering must not fail on one bad tag)."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _int(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None
