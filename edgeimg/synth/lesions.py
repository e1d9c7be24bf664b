"""Lesions and decoys painted into rendered anatomy, and the boxes and runs read back from them.

A lesion is an ellipsoid of one contrast inside lesion-capable tissue (never fat, air, gas or
bone); lesions never overwrite each other, so the labels derived from the id map always match
what was painted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeimg.synth.anatomy import (
    KIDNEY,
    LIVER,
    SOFT,
    SPLEEN,
    TISSUE_HU,
    TISSUE_NAMES,
    Body,
    ellipse_window,
)

MIN_LESION_PIXELS = 4
"""Lesion cross-sections smaller than this are not painted, so masks and labels always agree."""

LESION_TISSUES = np.array([SOFT, LIVER, SPLEEN, KIDNEY])
"""Tissues a lesion may occupy: lesions never replace fat, air, gas or bone."""

HOST_WEIGHTS = {LIVER: 0.5, KIDNEY: 0.15, SPLEEN: 0.15, SOFT: 0.2}

Box = tuple[int, int, int, int]


@dataclass
class Lesion:
    """One painted lesion: where it sits and on which slices it is visible."""

    id: int
    decoy: bool
    host: str
    delta_hu: float
    center: tuple[float, float]
    radius: tuple[float, float]
    slices: list[int]
    run: int


def _pick_center(
    rng: np.random.Generator,
    classes: np.ndarray,
    ids: np.ndarray,
    a: float,
    b: float,
    tries: int = 8,
) -> tuple[int, float, float] | None:
    """Choose a host tissue and a centre for an a-by-b lesion over a stack of slices.

    The centre lies in the host on every slice of the stack, and at least 80 % of the
    ellipse lies in free lesion-capable tissue on every slice, so the lesion paints cleanly.
    """
    free = np.all(np.isin(classes, LESION_TISSUES) & (ids == 0), axis=0)
    hosts = {t: np.all(classes == t, axis=0) & free for t in HOST_WEIGHTS}
    present = [t for t, where in hosts.items() if np.count_nonzero(where) > a * b]
    if not present:
        return None
    weights = np.array([HOST_WEIGHTS[t] for t in present])
    for _ in range(tries):
        host = present[rng.choice(len(present), p=weights / weights.sum())]
        rows, cols = np.nonzero(hosts[host])
        pick = rng.integers(len(rows))
        y, x = float(rows[pick]), float(cols[pick])
        win = ellipse_window(free.shape, x, y, a, b)
        if win is None:
            continue
        ys, xs, inside = win
        if np.count_nonzero(free[ys, xs] & inside) >= 0.8 * np.count_nonzero(inside):
            return host, x, y
    return None


def _paint_lesion(
    hu: np.ndarray,
    ids: np.ndarray,
    classes: np.ndarray,
    lesion_id: int,
    x: float,
    y: float,
    a: float,
    b: float,
    angle: float,
    value: float,
) -> bool:
    """Paint one lesion cross-section into free tissue pixels; False if it would be too small.

    Lesions never overwrite each other, so every painted lesion keeps the slices it was
    given and the labels derived from the id map match what was planned.
    """
    win = ellipse_window(classes.shape, x, y, a, b, angle)
    if win is None:
        return False
    ys, xs, inside = win
    inside &= np.isin(classes[ys, xs], LESION_TISSUES) & (ids[ys, xs] == 0)
    if np.count_nonzero(inside) < MIN_LESION_PIXELS:
        return False
    hu[ys, xs][inside] = value
    ids[ys, xs][inside] = lesion_id
    return True


def _contrast(rng: np.random.Generator) -> float:
    sign = -1.0 if rng.random() < 0.6 else 1.0
    return sign * float(rng.uniform(25.0, 120.0))


def lesion_radius(
    rng: np.random.Generator, body: Body, size: int, lo: float, hi: float
) -> tuple[float, float, float]:
    """In-plane half-axes (pixels), log-uniform in lo..hi of the body width, and an angle.

    Log-uniform radii make small lesions as common as large ones, as in practice.
    """
    r = lo * (hi / lo) ** float(rng.random()) * body.ax * size
    aspect = float(rng.uniform(0.7, 1.0))
    return max(r, 2.0), max(r * aspect, 2.0), float(rng.uniform(0.0, np.pi))


def add_lesion(
    rng: np.random.Generator,
    hu: np.ndarray,
    ids: np.ndarray,
    classes: np.ndarray,
    grid: np.ndarray,
    lesion_id: int,
    span: tuple[int, int, int],
    radius: tuple[float, float, float],
    *,
    relocate: bool = False,
    tries: int = 6,
) -> tuple[str, float, tuple[float, float], tuple[float, float]] | None:
    """Paint an ellipsoid visible on every slice of `span` (first, length, minimum length).

    When no centre fits, the lesion shrinks (radius, and length down to the minimum) and tries
    again, elsewhere in z if `relocate` (decoys keep their slices: their spacing is planned).
    `grid` holds each slice's position on the acquisition grid, so the ellipsoid stays round
    in physical z across dropped slices. Returns host, contrast, centre and half-axes, or None.
    """
    first, length, min_length = span
    a, b, angle = radius
    for _ in range(tries):
        rows = range(first, first + length)
        middle = (grid[first] + grid[first + length - 1]) / 2.0
        half = (grid[first + length - 1] - grid[first] + 1) / 2.0 + 0.5
        center = _pick_center(
            rng, classes[first : first + length], ids[first : first + length], a, b
        )
        if center is not None:
            host, x, y = center
            value = float(TISSUE_HU[host]) + _contrast(rng)
            for k in rows:
                shrink = np.sqrt(max(1.0 - ((grid[k] - middle) / half) ** 2, 0.0))
                ra, rb = max(a * shrink, 1.5), max(b * shrink, 1.5)
                if not _paint_lesion(
                    hu[k], ids[k], classes[k], lesion_id, x, y, ra, rb, angle, value
                ):
                    own = ids == lesion_id
                    hu[own] = TISSUE_HU[classes[own]]
                    ids[own] = 0
                    break
            else:
                return TISSUE_NAMES[host], value - float(TISSUE_HU[host]), (x, y), (a, b)
        a, b = max(a * 0.8, 2.0), max(b * 0.8, 2.0)
        shorter = max(min_length, (length * 2) // 3)
        if relocate:
            first, length = int(rng.integers(0, hu.shape[0] - shorter + 1)), shorter
        else:
            first, length = first + (length - shorter) // 2, shorter
    return None


def longest_run(indices: list[int]) -> int:
    """The most consecutive slices among sorted `indices`."""
    best = run = 0
    previous = None
    for i in indices:
        run = run + 1 if previous is not None and i == previous + 1 else 1
        best = max(best, run)
        previous = i
    return best


def _box(mask: np.ndarray) -> Box:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def lesion_boxes(ids: np.ndarray, count: int) -> tuple[list[list[Box]], list[list[int]]]:
    """Per slice of the id map: one box per lesion cross-section, and the matching ids."""
    boxes: list[list[Box]] = []
    box_ids: list[list[int]] = []
    for plane in ids:
        present = [i for i in range(1, count + 1) if np.any(plane == i)] if plane.any() else []
        boxes.append([_box(plane == i) for i in present])
        box_ids.append(present)
    return boxes, box_ids
