"""CNN slice classifier: does this slice show a lesion. One logit per slice."""

from __future__ import annotations

import torch
from torch import nn

from edgeimg import sdk


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


class CNNModel(sdk.SliceClassifier):
    """Lesion-present classifier; target, loss, metrics and postprocess come from the SDK."""

    epochs = 8
    batch_size = 32
    learning_rate = 3e-3

    def build(self) -> nn.Module:
        return SliceClassifier()
