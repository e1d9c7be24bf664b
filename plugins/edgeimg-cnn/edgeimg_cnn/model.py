"""CNN slice classifier: does this slice show a lesion. One logit per slice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeimg.datasets import SliceData, class_folders
from edgeimg.metrics import accuracy, auc
from edgeimg.slices import SliceModel


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SliceClassifier(nn.Module):
    """Four conv blocks, then global max and average pooling: small lesions survive max pooling."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(1, width),
            _block(width, width * 2),
            _block(width * 2, width * 4),
            _block(width * 4, width * 4),
        )
        self.head = nn.Linear(width * 8, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.features(image)
        pooled = torch.cat([features.amax(dim=(2, 3)), features.mean(dim=(2, 3))], dim=1)
        return self.head(pooled)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


class CNNModel(SliceModel):
    """Lesion-present classifier; output `logit` (N, 1), probability = sigmoid(logit)."""

    output_names = ("logit",)
    dynamic_axes = {"image": {0: "batch"}, "logit": {0: "batch"}}
    epochs = 8
    batch_size = 32
    learning_rate = 3e-3
    threshold = 0.5

    def build(self) -> nn.Module:
        return SliceClassifier()

    def target(self, data: SliceData) -> torch.Tensor:
        return torch.from_numpy(data.labels.astype(np.float32))

    def read_folder(self, data_dir: Path) -> SliceData:
        images, labels = class_folders(data_dir, self.spec.input)
        masks = labels.reshape(-1, 1, 1).astype(np.uint8)
        return SliceData(images, masks, [[] for _ in labels])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs[:, 0], targets)

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        probability = _sigmoid(outputs[0][:, 0])
        labels = targets[0] > 0.5
        return {
            "auc": auc(probability, labels),
            "accuracy": accuracy(probability >= self.threshold, labels),
        }

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        return [
            {"probability": float(p), "label": bool(p >= self.threshold)}
            for p in _sigmoid(outputs[0][:, 0])
        ]
