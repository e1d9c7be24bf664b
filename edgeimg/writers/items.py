"""Model results as writers see them: one small typed item per task, not dicts whose keys differ.

A model's `postprocess` returns plain dicts (the SDK's contract, and what results.jsonl shows);
`typed` turns each into the item its task defines, once, where writing begins. A writer says
which result kinds it accepts (`Writer.accepts`), so a mismatch is found when a model is loaded,
not in the middle of a series.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class SliceFinding:
    """A slice classifier's result for one slice."""

    kind: ClassVar[str] = "slice-finding"
    probability: float
    label: bool


@dataclass(frozen=True)
class SeriesFinding:
    """A sequence model's result for a whole series, with its per-slice probabilities."""

    kind: ClassVar[str] = "series-finding"
    probability: float
    positive: bool
    slice_probabilities: tuple[float, ...] = ()


@dataclass(frozen=True)
class Detections:
    """A detector's boxes on one slice, corners (x0, y0, x1, y1) in model-input pixels."""

    kind: ClassVar[str] = "detections"
    boxes: tuple[tuple[float, float, float, float], ...]
    scores: tuple[float, ...]


@dataclass(frozen=True)
class Mask:
    """A segmentation of one slice at model size: value n is the model's label n."""

    kind: ClassVar[str] = "mask"
    mask: np.ndarray


@dataclass(frozen=True)
class Image:
    """An image a model made of one slice, in the model's [0, 1] window (enhance, anomaly)."""

    kind: ClassVar[str] = "image"
    image: np.ndarray
    anomaly_score: float | None = None


Item = SliceFinding | SeriesFinding | Detections | Mask | Image

#: the result kind each task produces
KINDS: dict[str, type] = {
    "classify": SliceFinding,
    "series-classify": SeriesFinding,
    "detect": Detections,
    "segment": Mask,
    "enhance": Image,
    "anomaly": Image,
}


def kind_of(task: str) -> str:
    """The result kind a model of `task` produces (what writers declare they accept)."""
    return KINDS[task].kind


def typed(task: str, item: Mapping[str, Any]) -> Item:
    """One postprocessed result as the item its task defines; a missing key is a model bug."""
    if task == "classify":
        return SliceFinding(float(item["probability"]), bool(item["label"]))
    if task == "series-classify":
        slices = tuple(float(p) for p in item.get("slice_probabilities") or ())
        return SeriesFinding(float(item["probability"]), bool(item["positive"]), slices)
    if task == "detect":
        boxes = tuple(
            (float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1 in item["boxes"]
        )
        return Detections(boxes, tuple(float(score) for score in item["scores"]))
    if task == "segment":
        return Mask(np.asarray(item["mask"]))
    score = item.get("anomaly_score")
    return Image(np.asarray(item["image"]), None if score is None else float(score))


def typed_all(task: str, items: Sequence[Mapping[str, Any]]) -> list[Item]:
    """Every result of one series, typed."""
    return [typed(task, item) for item in items]
