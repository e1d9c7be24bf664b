"""SequenceClassifier: one label per series from a model over the slice axis.

Synthetic series are phantoms windowed to [0, 1] and padded to max_length. Each item is
(series (L, 1, H, W), target (1 + L,)): target[0] is the series label (a lesion persists on
>= 4 consecutive slices), target[1:] says which slices show a blob (lesion or decoy), the
auxiliary target of a per-slice head. A plugin writes `build()` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from edgeimg.sdk.datasets import DataError, window
from edgeimg.sdk.implementation import ModelImplementation
from edgeimg.sdk.metrics import auc, sigmoid
from edgeimg.sdk.model import InputSpec
from edgeimg.synth.phantom import make_phantom

#: value of every pixel of a padding slice (real slices are windowed to [0, 1])
PAD = -1.0
#: padding value of slice targets, ignored by the loss
IGNORE = -1.0
#: weight of the per-slice auxiliary loss next to the series loss
SLICE_WEIGHT = 0.5


def real_lengths(series: torch.Tensor) -> torch.Tensor:
    """Number of real (non-PAD) slices per series (N, L, ...); padding only comes at the end."""
    real = series.flatten(2).amax(dim=-1) > PAD / 2
    return real.sum(dim=1)


class SeriesDataset(Dataset):
    """`count` phantoms of random length in [min_length, max_length]; a third have gaps."""

    def __init__(self, spec: InputSpec, seed: int, count: int) -> None:
        rng = np.random.default_rng(seed)
        self.max_length = spec.max_length
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        for _ in range(count):
            phantom = make_phantom(
                rng,
                slices=int(rng.integers(spec.min_length, spec.max_length + 1)),
                size=spec.size[0],
                lesion_probability=0.5,
                decoy_probability=0.7,
                gaps=bool(rng.random() < 1 / 3),
            )
            series = window(phantom.hu, spec.window_center, spec.window_width).astype(np.float16)[
                :, None
            ]
            target = np.concatenate([[phantom.persistent], phantom.slice_labels]).astype(np.float32)
            self.items.append((series, target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One series padded to max_length, so the core's default batching and output
        concatenation work; the network masks the PAD slices, the loss the IGNORE targets."""
        series, target = self.items[index]
        steps = self.max_length
        padded = np.full((steps, *series.shape[1:]), PAD, np.float32)
        padded[: len(series)] = series
        padded_target = np.full(steps + 1, IGNORE, np.float32)
        padded_target[: len(target)] = target
        return torch.from_numpy(padded), torch.from_numpy(padded_target)


class SequenceClassifier(ModelImplementation):
    """Network: series (N, L, 1, H, W) in [0, 1], PAD slices at the end of shorter series, to
    `logit` (N,) for the series and `slice_logits` (N, L) for each slice.

    Write `build()` (the network must ignore PAD slices, see `real_lengths`). Provided:
    `example_inputs`, `datasets` (train), `heldout` (evaluate, build-engine), `loss` (train),
    `metrics` accuracy/auc (train, evaluate, build-engine) and `postprocess` (run, serve).
    """

    #: synthetic set sizes: training, validation (best-epoch choice) and held-out (evaluate)
    train_series, validation_series, heldout_series = 640, 80, 100
    input_names = ("series",)
    output_names = ("logit", "slice_logits")
    dynamic_axes = {
        "series": {0: "batch", 1: "sequence"},
        "logit": {0: "batch"},
        "slice_logits": {0: "batch", 1: "sequence"},
    }
    batch_size = 16

    def example_inputs(self, batch: int = 2, length: int = 17) -> tuple[np.ndarray, ...]:
        height, width = self.spec.input.size
        rng = np.random.default_rng(0)
        return (rng.random((batch, length, 1, height, width), dtype=np.float32),)

    def _series(self, seed: int, stream: int, count: int) -> SeriesDataset:
        """Separate seed streams for train, validation and held-out data, so they never overlap."""
        entropy = np.random.SeedSequence([seed, stream]).generate_state(1)[0]
        return SeriesDataset(self.spec.input, int(entropy), count)

    def datasets(self, seed: int, data_dir: Path | None = None) -> tuple[SeriesDataset, ...]:
        if data_dir is not None:
            raise DataError(f"{self.spec.name} trains on synthetic series only; drop --data")
        return (
            self._series(seed, 1, self.train_series),
            self._series(seed, 2, self.validation_series),
        )

    def heldout(self, seed: int) -> SeriesDataset:
        return self._series(seed, 3, self.heldout_series)

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        series_logit, slice_logits = outputs
        series_loss = F.binary_cross_entropy_with_logits(series_logit, targets[:, 0])
        slice_targets = targets[:, 1 : 1 + slice_logits.shape[1]]
        real = slice_targets != IGNORE
        slice_loss = F.binary_cross_entropy_with_logits(slice_logits[real], slice_targets[real])
        return series_loss + SLICE_WEIGHT * slice_loss

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        """Series accuracy and AUC, and the same for max-pooling the per-slice probabilities.

        The baseline calls a series positive when any slice looks like a lesion; decoys (blobs
        on 1-2 slices) fool it, which is the point of a model over the slice axis.
        """
        series_logit, slice_logits = outputs[0], outputs[1]
        target = np.asarray(targets[0])
        labels = target[:, 0] > 0.5
        real = target[:, 1 : 1 + slice_logits.shape[1]] != IGNORE
        probability = sigmoid(series_logit)
        pooled = np.where(real, sigmoid(slice_logits), 0.0).max(axis=1)
        return {
            "accuracy": float(np.mean((probability > 0.5) == labels)),
            "auc": auc(probability, labels),
            "baseline_accuracy": float(np.mean((pooled > 0.5) == labels)),
            "baseline_auc": auc(pooled, labels),
        }

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        series_logit, slice_logits = outputs[0], outputs[1]
        return [
            {
                "probability": float(sigmoid(logit)),
                "positive": bool(logit > 0),
                "slice_probabilities": sigmoid(slices).round(4).tolist(),
            }
            for logit, slices in zip(series_logit, slice_logits, strict=True)
        ]
