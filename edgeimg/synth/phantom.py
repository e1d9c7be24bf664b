"""Synthetic abdominal CT phantoms with lesions and decoys, in plain numpy.

Models train on these in memory, so generation is numpy only (no torch, no pydicom) and fast:
every structure is painted slice by slice inside its own bounding box. All randomness comes
from the caller's `numpy.random.Generator`, so a seeded generator gives identical phantoms.

Image coordinates follow DICOM axial display: column index grows to patient left, row index
grows to patient posterior, slice index grows from head to feet. The anatomy is painted by
`edgeimg.synth.anatomy`, lesions and decoys by `edgeimg.synth.lesions`; this module plans a
series (or a batch of slices) and derives its ground truth from what was painted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeimg.synth.anatomy import (
    AIR,
    FOV_MM,
    TISSUE_HU,
    Body,
    add_texture,
    draw_body,
    render,
    stack_bodies,
)
from edgeimg.synth.lesions import Box, Lesion, add_lesion, lesion_boxes, lesion_radius, longest_run

PERSIST_MIN = 4
"""A lesion visible on at least this many consecutive slices makes a series `persistent`."""


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
    body = draw_body(rng)
    thickness = float(rng.choice([2.5, 3.0, 5.0]))
    spacing = FOV_MM / size
    start = float(rng.uniform(-0.15, 0.1))
    ts = start + float(rng.uniform(0.75, 1.0)) * grid / (total - 1)

    classes = np.zeros((slices, size, size), np.uint8)
    render(classes, body, ts)
    hu = TISSUE_HU[classes]
    ids = np.zeros_like(classes)

    plan: list[tuple[bool, int, int, tuple[float, float, float]]] = []
    if rng.random() < lesion_probability:
        for _ in range(int(rng.integers(1, 4))):
            radius = lesion_radius(rng, body, size, 0.03, 0.15)
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
                    plan.append((True, first, length, lesion_radius(rng, body, size, 0.03, 0.08)))
                    break

    lesions: list[Lesion] = []
    for decoy, first, length, radius in plan:
        lesion_id = len(lesions) + 1
        span = (first, length, length if decoy else PERSIST_MIN)
        placed = add_lesion(
            rng, hu, ids, classes, grid, lesion_id, span, radius, relocate=not decoy
        )
        if placed is not None:
            host, delta, center, axes = placed
            lesions.append(Lesion(lesion_id, decoy, host, delta, center, axes, [], 0))

    add_texture(rng, hu, classes)
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
    boxes, box_ids = lesion_boxes(ids, len(lesions))
    for lesion in lesions:
        lesion.slices = [k for k, present in enumerate(box_ids) if lesion.id in present]
        lesion.run = longest_run(lesion.slices)
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
    body: Body,
    count: int,
) -> bool:
    """Paint up to `count` lesions into one slice; True if at least one found room."""
    painted = False
    for lesion_id in range(1, count + 1):
        radius = lesion_radius(rng, body, hu.shape[-1], 0.03, 0.15)
        span = (0, 1, 1)
        placed = add_lesion(
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
    bodies = [draw_body(rng) for _ in range(n)]
    render(classes, stack_bodies(bodies), rng.uniform(-0.1, 1.0, n))
    hu = TISSUE_HU[classes]
    ids = np.zeros_like(classes)
    positive = np.zeros(n, bool)
    positive[rng.permutation(n)[: int(round(n * positive_fraction))]] = True
    for k in np.flatnonzero(positive):
        count = 1 if rng.random() < 0.75 else 2
        for _ in range(50):
            if _slice_lesions(rng, hu[k], ids[k], classes[k], bodies[k], count):
                break
            bodies[k] = draw_body(rng)
            classes[k] = AIR
            render(classes[k : k + 1], bodies[k], np.array([rng.uniform(-0.1, 1.0)]))
            hu[k], ids[k] = TISSUE_HU[classes[k]], 0
        else:
            raise RuntimeError(f"no room for a lesion in {size}x{size} slices")
    add_texture(rng, hu, classes)
    boxes, _ = lesion_boxes(ids, 2)
    return hu, (ids > 0).astype(np.uint8), boxes
