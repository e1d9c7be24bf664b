"""Small U-Net for lesion segmentation: one logit per pixel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeimg.datasets import SliceData, segmentation_folder
from edgeimg.metrics import dice
from edgeimg.slices import SliceModel


def _double_conv(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Three down and three up steps; input sides must be multiples of 8."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.down = nn.ModuleList()
        channels = 1
        for w in widths:
            self.down.append(_double_conv(channels, w))
            channels = w
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(channels, w, 2, stride=2))
            self.merge.append(_double_conv(w * 2, w))
            channels = w
        self.head = nn.Conv2d(channels, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        x = image
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class UNetModel(SliceModel):
    """Lesion segmentation; output `mask_logit` (N, 1, H, W), lesion where sigmoid > 0.5."""

    output_names = ("mask_logit",)
    dynamic_axes = {"image": {0: "batch"}, "mask_logit": {0: "batch"}}
    epochs = 14
    batch_size = 16
    learning_rate = 3e-3
    train_size = 1600

    def build(self) -> nn.Module:
        return UNet()

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
