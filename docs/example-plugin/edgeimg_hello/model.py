"""The hello network. sdk.SliceClassifier provides data, loss, metrics and postprocessing."""

from __future__ import annotations

import torch
from edgeimg import sdk
from torch import nn


def conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class Network(nn.Module):
    """Three strided conv blocks, then global max and mean pooling to one logit."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv(1, width, 2),
            conv(width, width * 2, 2),
            conv(width * 2, width * 4, 2),
        )
        self.head = nn.Linear(width * 8, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.features(image)
        pooled = torch.cat([features.amax(dim=(2, 3)), features.mean(dim=(2, 3))], dim=1)
        return self.head(pooled)


class HelloModel(sdk.SliceClassifier):
    """Only `build()` is ours; help(sdk.SliceClassifier) lists what else may be overridden."""

    epochs = 4
    batch_size = 16
    learning_rate = 3e-3
    train_size, val_size, heldout_size = 512, 64, 64

    def build(self) -> nn.Module:
        return Network()
