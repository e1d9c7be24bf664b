"""Phantom anatomy: tissue classes painted as ellipses, slice by slice, then tissue texture.

A patient is a `Body` of random parameters; `render` paints the tissue classes of axial
slices at relative z positions, for one patient or (`stack_bodies`) a batch in one pass.
Every draw comes from the caller's generator, in a fixed order, so a seed gives the same body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FOV_MM = 400.0
"""Reconstruction field of view: pixel spacing is FOV_MM / size."""

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


@dataclass
class Body:
    """Per-patient anatomy parameters in normalized units (image spans -1..1).

    Fields are scalars (arrays for jitter, rib_phase and loops) for one patient, or carry a
    trailing per-slice axis when `stack_bodies` batches several patients.
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


def draw_body(rng: np.random.Generator) -> Body:
    """One random patient's anatomy parameters."""
    return Body(
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


def stack_bodies(bodies: list[Body]) -> Body:
    """Many patients as one Body of per-slice arrays, to render a batch in one pass."""
    return Body(
        **{
            name: np.stack([getattr(body, name) for body in bodies], axis=-1)
            for name in Body.__dataclass_fields__
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


def ellipse_window(
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


def render(classes: np.ndarray, body: Body, t: np.ndarray) -> None:
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


def add_texture(
    rng: np.random.Generator, hu: np.ndarray, classes: np.ndarray, amplitude: float = 6.0
) -> None:
    """Add smooth tissue texture in place, leaving air and gas flat."""
    field = _smooth_field(rng, classes.shape[0], classes.shape[-1])
    field *= amplitude
    np.add(hu, field, out=hu, where=(classes != AIR) & (classes != GAS))
