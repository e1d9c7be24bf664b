"""Segmenter: one logit per pixel, lesion where sigmoid > 0.5, written as DICOM SEG.

Everything but the network: mask targets, DICOM-SEG folder reading, BCE plus soft Dice, Dice
and false-positive-slice metrics, and masks for the SEG writer. A plugin writes `build()` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeimg.sdk.datasets import SliceData, segmentation_folder
from edgeimg.sdk.metrics import dice
from edgeimg.sdk.slices import SliceModel


class Segmenter(SliceModel):
    """Network: image (N, 1, H, W) in [0, 1] to `mask_logit` (N, 1, H, W).

    Write `build()`. Provided: `example_inputs`, `datasets` (train), `heldout` (evaluate,
    build-engine), `loss` (train), `metrics` dice/false_positive_slices (train, evaluate,
    build-engine) and `postprocess` (run, serve: a uint8 mask per slice).
    """

    output_names = ("mask_logit",)
    dynamic_axes = {"image": {0: "batch"}, "mask_logit": {0: "batch"}}

    def target(self, data: SliceData) -> torch.Tensor:
        return torch.from_numpy(data.masks[:, None].astype(np.float32))

    def read_folder(self, data_dir: Path) -> SliceData:
        return segmentation_folder(data_dir, self.spec.input)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy plus per-slice soft Dice, so a small lesion counts as much as a large one.

        On a lesion-free slice the smoothed Dice term still penalises any predicted pixels.
        """
        probability = torch.sigmoid(outputs)
        overlap = (probability * targets).sum(dim=(1, 2, 3))
        total = probability.sum(dim=(1, 2, 3)) + targets.sum(dim=(1, 2, 3))
        soft_dice = 1 - (2 * overlap + 1) / (total + 1)
        return F.binary_cross_entropy_with_logits(outputs, targets) + soft_dice.mean()

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        """Mean Dice over slices that bear a lesion, and the false-positive slice rate."""
        predicted = outputs[0][:, 0] > 0
        truth = targets[0][:, 0] > 0.5
        bearing = truth.reshape(len(truth), -1).any(axis=1)
        scores = dice(predicted[bearing], truth[bearing])
        clean = ~bearing
        false_positive = predicted[clean].reshape(int(clean.sum()), -1).any(axis=1)
        return {
            "dice": float(scores.mean()) if len(scores) else 0.0,
            "false_positive_slices": float(false_positive.mean()) if clean.any() else 0.0,
        }

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        masks = outputs[0][:, 0] > 0
        return [{"mask": mask.astype(np.uint8), "pixels": int(mask.sum())} for mask in masks]
