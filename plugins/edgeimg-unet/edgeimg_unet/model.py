"""Small U-Net for lesion segmentation: one logit per pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeimg import sdk


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


class UNetModel(sdk.Segmenter):
    """Lesion segmentation; target, loss, metrics and postprocess come from sdk.Segmenter."""

    epochs = 14
    batch_size = 16
    learning_rate = 3e-3
    train_size = 1600

    def build(self) -> nn.Module:
        return UNet()
