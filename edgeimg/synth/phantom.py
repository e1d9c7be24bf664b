"""Synthetic abdominal CT phantoms with lesions and decoys, in plain numpy.

Models train on these in memory, so generation is numpy only (no torch, no pydicom) and fast:
every structure is painted slice by slice inside its own bounding box. All randomness comes
from the caller's `numpy.random.Generator`, so a seeded generator gives identical phantoms.

Image coordinates follow DICOM axial display: column index grows to patient left, row index
grows to patient posterior, slice index grows from head to feet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PERSIST_MIN = 4
"""A lesion visible on at least this many consecutive slices makes a series `persistent`."""

FOV_MM = 400.0
"""Reconstruction field of view: pixel spacing is FOV_MM / size."""

MIN_LESION_PIXELS = 4
"""Lesion cross-sections smaller than this are not painted, so masks and labels always agree."""

AIR, FAT, SOFT, LIVER, SPLEEN, KIDNEY, AORTA, STOMACH, GAS, MARROW, CORTEX, RIB, CANAL = range(13)
TISSUE_HU = np.array(
    [-1000, -100, 40, 60, 50, 30, 45, 20, -950, 700, 1000, 800, 20], dtype=np.float32
)
TISSUE_NAMES = (
    "air",
    "fat",
    "soft tissue",
    "liver",
    "spleen",
    "kidney",
    "aorta",
    "stomach",
    "gas",
    "marrow",
    "cortex",
    "rib",
    "canal",
)
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


@dataclass
class Phantom:
    """A synthetic series: clean HU volume, lesion ground truth and slice geometry.

    Labels are derived from what was painted: `slice_labels[k]` is `lesion_mask[k].any()`,
    `boxes[k]` holds one (x0, y0, x1, y1) box per lesion cross-section on slice k (exclusive
    ends) and `box_ids[k]` the matching ids in `lesion_ids` (0 background, i for
    `lesions[i - 1]`). Runs of slices count in slice order, across any gaps in z.
    """

    hu: np.ndarray
    lesion_mask: np.ndarray
    boxes: list[list[Box]]
    slice_labels: np.ndarray
    persistent: bool
    lesion_present: bool
    pixel_spacing: float
    slice_thickness: float
    positions_z: np.ndarray
    lesion_ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.uint8))
    box_ids: list[list[int]] = field(default_factory=list)
    lesions: list[Lesion] = field(default_factory=list)


@dataclass
class _Body:
    """Per-patient anatomy parameters in normalized units (image spans -1..1).

    Fields are scalars (arrays for jitter, rib_phase and loops) for one patient, or carry a
    trailing per-slice axis when `_stack` batches several patients.
    """

    cx: float
    cy: float
    ax: float
    ay: float
    fat: float
    phase: float
    jitter: np.ndarray
    rib_phase: np.ndarray
    gas: bool
    loops: np.ndarray


ORGANS = (
    # tissue, u, v, half-axis a, half-axis b (times body scale), angle, z start, z end
    (LIVER, -0.40, -0.02, 0.40, 0.52, 0.35, -0.35, 0.70),
    (SPLEEN, 0.55, 0.30, 0.16, 0.26, -0.50, -0.10, 0.45),
    (STOMACH, 0.28, -0.28, 0.28, 0.22, 0.20, -0.05, 0.40),
    (KIDNEY, -0.40, 0.42, 0.13, 0.21, 0.40, 0.30, 0.95),
    (KIDNEY, 0.40, 0.42, 0.13, 0.21, -0.40, 0.32, 0.97),
)


def _draw_body(rng: np.random.Generator) -> _Body:
    return _Body(
        cx=float(rng.uniform(-0.03, 0.03)),
        cy=float(rng.uniform(0.0, 0.08)),
        ax=float(rng.uniform(0.74, 0.88)),
        ay=float(rng.uniform(0.52, 0.64)),
        fat=float(rng.uniform(0.05, 0.13)),
        phase=float(rng.uniform(0.0, 2 * np.pi)),
        jitter=rng.uniform(-0.06, 0.06, size=(len(ORGANS), 3)),
        rib_phase=rng.uniform(0.0, 1.0, size=12),
        gas=bool(rng.random() < 0.7),
        loops=np.column_stack(
            [
                rng.uniform(-0.45, 0.6, 12),
                rng.uniform(-0.55, 0.25, 12),
                rng.uniform(0.05, 0.1, 12),
                rng.uniform(0.2, 1.0, 12),
                rng.uniform(0.15, 0.5, 12),
                rng.random(12) < 0.35,
            ]
        ),
    )


def _stack(bodies: list[_Body]) -> _Body:
    """Many patients as one _Body of per-slice arrays, to render a batch in one pass."""
    return _Body(
        **{
            name: np.stack([getattr(body, name) for body in bodies], axis=-1)
            for name in _Body.__dataclass_fields__
        }
    )


def _paint(
    classes: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    value: int,
    angle: float = 0.0,
    where: np.ndarray | bool = True,
) -> None:
    """Paint one ellipse per slice into a (K, S, S) stack, in one numpy pass.

    Parameters are per slice, shape (K,) or scalars, in pixel units with centres at pixel
    centres; `where` switches the ellipse off on some slices. Only the bounding box of all
    the slices' ellipses is computed, which is what keeps phantom generation fast.
    """
    k, height, width = classes.shape
    cx, cy, a, b = (np.broadcast_to(np.asarray(v, np.float64), (k,)) for v in (cx, cy, a, b))
    on = np.broadcast_to(where, (k,)) & (a > 0) & (b > 0)
    if not on.any():
        return
    a, b = np.where(on, a, 1.0), np.where(on, b, 1.0)
    c, s = math.cos(angle), math.sin(angle)
    hx, hy = np.hypot(a * c, b * s), np.hypot(a * s, b * c)
    x0, x1 = max(math.floor((cx - hx)[on].min()), 0), min(math.ceil((cx + hx)[on].max()) + 1, width)
    y0, y1 = (
        max(math.floor((cy - hy)[on].min()), 0),
        min(math.ceil((cy + hy)[on].max()) + 1, height),
    )
    if x0 >= x1 or y0 >= y1:
        return
    ia, ib = (1.0 / (a * a))[:, None], (1.0 / (b * b))[:, None]
    dx = (np.arange(x0, x1)[None, :] - cx[:, None]).astype(np.float32)
    dy = (np.arange(y0, y1)[None, :] - cy[:, None]).astype(np.float32)
    q = ((c * c * ia + s * s * ib) * dx * dx)[:, None, :] + ((s * s * ia + c * c * ib) * dy * dy)[
        :, :, None
    ]
    if angle:
        q += (2.0 * c * s * (ia - ib) * dy)[:, :, None] * dx[:, None, :]
    inside = (q <= 1.0) & on[:, None, None]
    classes[:, y0:y1, x0:x1][inside] = value


def _ellipse_window(
    shape: tuple[int, ...], cx: float, cy: float, a: float, b: float, angle: float = 0.0
) -> tuple[slice, slice, np.ndarray] | None:
    """Bounding-box slices and inside-mask of a rotated ellipse; scalar maths for speed."""
    if a <= 0 or b <= 0:
        return None
    c, s = math.cos(angle), math.sin(angle)
    hx, hy = math.hypot(a * c, b * s), math.hypot(a * s, b * c)
    x0, x1 = max(math.floor(cx - hx), 0), min(math.ceil(cx + hx) + 1, shape[-1])
    y0, y1 = max(math.floor(cy - hy), 0), min(math.ceil(cy + hy) + 1, shape[-2])
    if x0 >= x1 or y0 >= y1:
        return None
    ia, ib = 1.0 / (a * a), 1.0 / (b * b)
    dx = np.arange(x0, x1, dtype=np.float32) - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32) - np.float32(cy)
    q = (c * c * ia + s * s * ib) * dx * dx + ((s * s * ia + c * c * ib) * dy * dy)[:, None]
    if angle:
        q = q + np.multiply.outer(2.0 * c * s * (ia - ib) * dy, dx)
    return slice(y0, y1), slice(x0, x1), q <= 1.0


def _bump(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """Organ cross-section scale along z: a half sine over [start, end], zero outside."""
    inside = (t > start) & (t < end)
    return np.where(inside, np.sin(np.pi * (t - start) / (end - start)), 0.0)


def _render(classes: np.ndarray, body: _Body, t: np.ndarray) -> None:
    """Paint the tissue classes of axial slices at relative z positions t (0 head, 1 feet)."""
    half = classes.shape[-1] / 2.0

    def px(u: float) -> float:
        return (u + 1.0) * half - 0.5

    wobble = 1.0 + 0.04 * np.sin(2 * np.pi * t + body.phase)
    ax, ay = body.ax * wobble, body.ay * (2.0 - wobble)
    scale = (ax + ay) / 2.0 * half
    cx, cy = px(body.cx), px(body.cy)
    inner_x, inner_y = ax * half * (1 - body.fat), ay * half * (1 - 1.3 * body.fat)
    _paint(classes, cx, cy, ax * half, ay * half, FAT)
    _paint(classes, cx, cy, inner_x, inner_y, SOFT)
    _paint(classes, cx, cy, inner_x - 0.06 * scale, inner_y - 0.06 * scale, FAT)
    for side in (-1, 1):
        muscle_x, muscle_y = cx + side * 0.2 * scale, cy + 0.62 * ay * half
        _paint(classes, muscle_x, muscle_y, 0.13 * scale, 0.1 * scale, SOFT)

    for u, v, r, zc, zhalf, gas in body.loops:
        present = np.abs(t - zc) <= zhalf
        lx, ly = cx + (u + 0.1 * (t - zc)) * ax * half, cy + v * ay * half
        _paint(classes, lx, ly, r * scale, r * scale * 0.8, SOFT, where=present)
        gassy = present & (gas > 0)
        _paint(classes, lx, ly, 0.5 * r * scale, 0.4 * r * scale, GAS, where=gassy)

    for (tissue, u, v, a, b, angle, z0, z1), (du, dv, ds) in zip(ORGANS, body.jitter, strict=True):
        grow = _bump(t, z0 + dv, z1 + dv)
        present = grow >= 0.2
        ox, oy = cx + (u + du) * ax * half, cy + (v + dv) * ay * half
        size_a, size_b = a * scale * (1 + ds) * grow, b * scale * (1 + ds) * grow
        _paint(classes, ox, oy, size_a, size_b, tissue, angle, where=present)
        if tissue == STOMACH:
            gas_y = cy + (v + dv - 0.12 * grow) * ay * half
            gas_a, gas_b = 0.14 * scale * grow, 0.06 * scale * grow
            _paint(classes, ox, gas_y, gas_a, gas_b, GAS, where=present & body.gas)

    _paint(
        classes, cx + 0.06 * ax * half, cy + 0.30 * ay * half, 0.065 * scale, 0.065 * scale, AORTA
    )

    vb_r = 0.10 * scale
    vb_y = cy + 0.52 * ay * half
    canal_r = 0.035 * scale
    canal_y = vb_y + vb_r + canal_r + 0.02 * scale
    _paint(classes, cx, vb_y, vb_r, vb_r * 0.9, CORTEX)
    _paint(classes, cx, vb_y, vb_r * 0.8, vb_r * 0.7, MARROW)
    for side in (-1, 1):
        process_x = cx + side * (vb_r + 0.05 * scale)
        _paint(classes, process_x, canal_y, 0.06 * scale, 0.016 * scale, CORTEX)
    _paint(classes, cx, canal_y, canal_r + 0.025 * scale, canal_r + 0.02 * scale, CORTEX)
    _paint(classes, cx, canal_y, canal_r, canal_r, CANAL)
    spine_y = canal_y + canal_r + 0.07 * scale
    _paint(classes, cx, spine_y, 0.02 * scale, 0.06 * scale, CORTEX)

    angles = np.deg2rad(np.linspace(115.0, 245.0, 6))
    for i, theta in enumerate(np.concatenate([angles, np.pi - angles])):
        present = (t < 0.75) & (np.cos(2 * np.pi * (3 * t + body.rib_phase[i])) >= 0.1)
        rx = cx + math.cos(theta) * (inner_x - 0.03 * scale)
        ry = cy + math.sin(theta) * (inner_y - 0.03 * scale)
        _paint(classes, rx, ry, 0.04 * scale, 0.025 * scale, RIB, float(theta), where=present)


def _smooth_field(rng: np.random.Generator, count: int, size: int, grid: int = 6) -> np.ndarray:
    """Low-frequency texture, unit variance: a coarse random grid bilinearly upsampled."""
    coarse = rng.standard_normal((count, grid, grid)).astype(np.float32)
    pos = np.linspace(0.0, grid - 1.0, size, dtype=np.float32)
    low = np.minimum(pos.astype(np.int64), grid - 2)
    frac = pos - low
    interp = np.zeros((size, grid), np.float32)
    interp[np.arange(size), low] = 1.0 - frac
    interp[np.arange(size), low + 1] = frac
    rows = (interp @ coarse).reshape(count * size, grid)
    return (rows @ interp.T).reshape(count, size, size)


def _add_texture(
    rng: np.random.Generator, hu: np.ndarray, classes: np.ndarray, amplitude: float = 6.0
) -> None:
    """Add smooth tissue texture in place, leaving air and gas flat."""
    field = _smooth_field(rng, classes.shape[0], classes.shape[-1])
    field *= amplitude
    np.add(hu, field, out=hu, where=(classes != AIR) & (classes != GAS))


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
        win = _ellipse_window(free.shape, x, y, a, b)
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
    win = _ellipse_window(classes.shape, x, y, a, b, angle)
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


def _lesion_radius(
    rng: np.random.Generator, body: _Body, size: int, lo: float, hi: float
) -> tuple[float, float, float]:
    """In-plane half-axes (pixels), log-uniform in lo..hi of the body width, and an angle.

    Log-uniform radii make small lesions as common as large ones, as in practice.
    """
    r = lo * (hi / lo) ** float(rng.random()) * body.ax * size
    aspect = float(rng.uniform(0.7, 1.0))
    return max(r, 2.0), max(r * aspect, 2.0), float(rng.uniform(0.0, np.pi))


def _add_lesion(
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


def _longest_run(indices: list[int]) -> int:
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


def _boxes(ids: np.ndarray, count: int) -> tuple[list[list[Box]], list[list[int]]]:
    boxes: list[list[Box]] = []
    box_ids: list[list[int]] = []
    for plane in ids:
        present = [i for i in range(1, count + 1) if np.any(plane == i)] if plane.any() else []
        boxes.append([_box(plane == i) for i in present])
        box_ids.append(present)
    return boxes, box_ids


def make_phantom(
    rng: np.random.Generator,
    slices: int = 32,
    size: int = 128,
    *,
    lesion_probability: float = 0.5,
    decoy_probability: float = 0.5,
    gaps: bool = False,
) -> Phantom:
    """One synthetic abdominal series.

    With `lesion_probability` the series gets 1-3 lesions spanning at least PERSIST_MIN
    consecutive slices; with `decoy_probability` it gets 1-2 lesion-like decoys visible on only
    1-2 slices (kept apart so decoys never add up to a persistent run). `gaps` drops 1-3
    non-end slices, leaving jumps in `positions_z`.
    """
    if slices < PERSIST_MIN:
        raise ValueError(f"slices must be at least {PERSIST_MIN}, got {slices}")
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    dropped = int(rng.integers(1, 4)) if gaps else 0
    total = slices + dropped
    grid = np.arange(total)
    if dropped:
        grid = np.delete(grid, rng.choice(np.arange(1, total - 1), dropped, replace=False))
    body = _draw_body(rng)
    thickness = float(rng.choice([2.5, 3.0, 5.0]))
    spacing = FOV_MM / size
    start = float(rng.uniform(-0.15, 0.1))
    ts = start + float(rng.uniform(0.75, 1.0)) * grid / (total - 1)

    classes = np.zeros((slices, size, size), np.uint8)
    _render(classes, body, ts)
    hu = TISSUE_HU[classes]
    ids = np.zeros_like(classes)

    plan: list[tuple[bool, int, int, tuple[float, float, float]]] = []
    if rng.random() < lesion_probability:
        for _ in range(int(rng.integers(1, 4))):
            radius = _lesion_radius(rng, body, size, 0.03, 0.15)
            natural = 2 * radius[0] * spacing * rng.uniform(0.8, 1.2) / thickness
            length = int(np.clip(round(natural), PERSIST_MIN, slices))
            plan.append((False, int(rng.integers(0, slices - length + 1)), length, radius))
    if rng.random() < decoy_probability:
        taken: list[tuple[int, int]] = []
        for _ in range(int(rng.integers(1, 3))):
            length = int(rng.integers(1, 3))
            for _ in range(20):
                first = int(rng.integers(0, slices - length + 1))
                if all(first > end + 1 or first + length < begin for begin, end in taken):
                    taken.append((first, first + length - 1))
                    plan.append((True, first, length, _lesion_radius(rng, body, size, 0.03, 0.08)))
                    break

    lesions: list[Lesion] = []
    for decoy, first, length, radius in plan:
        lesion_id = len(lesions) + 1
        span = (first, length, length if decoy else PERSIST_MIN)
        placed = _add_lesion(
            rng, hu, ids, classes, grid, lesion_id, span, radius, relocate=not decoy
        )
        if placed is not None:
            host, delta, center, axes = placed
            lesions.append(Lesion(lesion_id, decoy, host, delta, center, axes, [], 0))

    _add_texture(rng, hu, classes)
    positions_z = round(float(rng.uniform(-200.0, 0.0)), 1) - thickness * grid.astype(np.float64)
    return _finish(hu, ids, lesions, spacing, thickness, positions_z)


def _finish(
    hu: np.ndarray,
    ids: np.ndarray,
    lesions: list[Lesion],
    spacing: float,
    thickness: float,
    positions_z: np.ndarray,
) -> Phantom:
    """Derive labels, boxes and persistence from the painted lesion ids, so they always agree."""
    boxes, box_ids = _boxes(ids, len(lesions))
    for lesion in lesions:
        lesion.slices = [k for k, present in enumerate(box_ids) if lesion.id in present]
        lesion.run = _longest_run(lesion.slices)
    lesions = [lesion for lesion in lesions if lesion.slices]
    persistent = any(lesion.run >= PERSIST_MIN for lesion in lesions)
    return Phantom(
        hu=hu.astype(np.float32, copy=False),
        lesion_mask=(ids > 0).astype(np.uint8),
        boxes=boxes,
        slice_labels=np.array([bool(b) for b in boxes], dtype=bool),
        persistent=persistent,
        lesion_present=bool(lesions),
        pixel_spacing=spacing,
        slice_thickness=thickness,
        positions_z=positions_z,
        lesion_ids=ids,
        box_ids=box_ids,
        lesions=lesions,
    )


def _slice_lesions(
    rng: np.random.Generator,
    hu: np.ndarray,
    ids: np.ndarray,
    classes: np.ndarray,
    body: _Body,
    count: int,
) -> bool:
    """Paint up to `count` lesions into one slice; True if at least one found room."""
    painted = False
    for lesion_id in range(1, count + 1):
        radius = _lesion_radius(rng, body, hu.shape[-1], 0.03, 0.15)
        span = (0, 1, 1)
        placed = _add_lesion(
            rng, hu[None], ids[None], classes[None], np.zeros(1), lesion_id, span, radius
        )
        painted |= placed is not None
    return painted


def make_slices(
    rng: np.random.Generator, n: int, size: int = 128, positive_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray, list[list[Box]]]:
    """A batch of independent 2D slices for slice-level training.

    Exactly round(n * positive_fraction) slices, at random positions in the batch, carry 1-2
    lesions; each slice has its own anatomy and z level. Returns (hu, mask, boxes).
    """
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    classes = np.zeros((n, size, size), np.uint8)
    bodies = [_draw_body(rng) for _ in range(n)]
    _render(classes, _stack(bodies), rng.uniform(-0.1, 1.0, n))
    hu = TISSUE_HU[classes]
    ids = np.zeros_like(classes)
    positive = np.zeros(n, bool)
    positive[rng.permutation(n)[: int(round(n * positive_fraction))]] = True
    for k in np.flatnonzero(positive):
        count = 1 if rng.random() < 0.75 else 2
        for _ in range(50):
            if _slice_lesions(rng, hu[k], ids[k], classes[k], bodies[k], count):
                break
            bodies[k] = _draw_body(rng)
            classes[k] = AIR
            _render(classes[k : k + 1], bodies[k], np.array([rng.uniform(-0.1, 1.0)]))
            hu[k], ids[k] = TISSUE_HU[classes[k]], 0
        else:
            raise RuntimeError(f"no room for a lesion in {size}x{size} slices")
    _add_texture(rng, hu, classes)
    boxes, _ = _boxes(ids, 2)
    return hu, (ids > 0).astype(np.uint8), boxes
