"""RNN, LSTM and GRU series classifiers: one implementation, parametrized by the recurrent cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgeimg.implementation import ModelImplementation
from edgeimg.metrics import auc
from edgeimg_sequence.data import IGNORE, SeriesDataset
from edgeimg_sequence.network import SeriesClassifier

#: weight of the per-slice auxiliary loss next to the series loss
SLICE_WEIGHT = 0.5
#: 640 training series overfit (validation stalls near 0.91, more epochs do not help); 2560 do not
TRAIN_SERIES, VALIDATION_SERIES, HELDOUT_SERIES = 2560, 160, 200


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


class SequenceModel(ModelImplementation):
    """Series-level classifier; subclasses pick the cell and whether it runs both ways."""

    cell = "gru"
    bidirectional = True
    input_names = ("series",)
    output_names = ("logit", "slice_logits")
    dynamic_axes = {
        "series": {0: "batch", 1: "sequence"},
        "logit": {0: "batch"},
        "slice_logits": {0: "batch", 1: "sequence"},
    }
    epochs = 12
    batch_size = 16
    learning_rate = 3e-3
    weight_decay = 1e-4

    def build(self) -> nn.Module:
        return SeriesClassifier(self.cell, bidirectional=self.bidirectional)

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
            raise NotImplementedError("sequence models train on synthetic series only for now")
        return self._series(seed, 1, TRAIN_SERIES), self._series(seed, 2, VALIDATION_SERIES)

    def heldout(self, seed: int) -> SeriesDataset:
        return self._series(seed, 3, HELDOUT_SERIES)

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
        probability = _sigmoid(series_logit)
        pooled = np.where(real, _sigmoid(slice_logits), 0.0).max(axis=1)
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
                "probability": float(_sigmoid(logit)),
                "positive": bool(logit > 0),
                "slice_probabilities": _sigmoid(slices).round(4).tolist(),
            }
            for logit, slices in zip(series_logit, slice_logits, strict=True)
        ]


class RNNModel(SequenceModel):
    """Elman RNN (tanh), bidirectional; it learns the run-length rule slower than gated cells."""

    cell = "rnn"
    epochs = 20


class LSTMModel(SequenceModel):
    """Bidirectional LSTM."""

    cell = "lstm"


class GRUModel(SequenceModel):
    """Bidirectional GRU."""

    cell = "gru"
