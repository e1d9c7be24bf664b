"""SliceClassifier: one logit per 2D slice, "does this slice show a lesion".

Everything but the network: targets from lesion masks, class-folder DICOM reading, the loss,
AUC and accuracy, and per-slice probabilities for SR. A plugin writes `build()` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeimg.sdk.datasets import SliceData, class_folders
from edgeimg.sdk.metrics import accuracy, auc, sigmoid
from edgeimg.sdk.slices import SliceModel


class SliceClassifier(SliceModel):
    """Network: image (N, 1, H, W) in [0, 1] to `logit` (N, 1); probability = sigmoid(logit).

    Write `build()`. Provided: `example_inputs`, `datasets` (train), `heldout` (evaluate,
    build-engine), `loss` (train), `metrics` auc/accuracy (train, evaluate, build-engine) and
    `postprocess` (run, serve).
    """

    output_names = ("logit",)
    dynamic_axes = {"image": {0: "batch"}, "logit": {0: "batch"}}
    threshold = 0.5

    def target(self, data: SliceData) -> torch.Tensor:
        return torch.from_numpy(data.labels.astype(np.float32))

    def read_folder(self, data_dir: Path) -> SliceData:
        images, labels = class_folders(data_dir, self.spec.input)
        masks = labels.reshape(-1, 1, 1).astype(np.uint8)
        return SliceData(images, masks, [[] for _ in labels])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs[:, 0], targets)

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        probability = sigmoid(outputs[0][:, 0])
        labels = targets[0] > 0.5
        return {
            "auc": auc(probability, labels),
            "accuracy": accuracy(probability >= self.threshold, labels),
        }

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        return [
            {"probability": float(p), "label": bool(p >= self.threshold)}
            for p in sigmoid(outputs[0][:, 0])
        ]
