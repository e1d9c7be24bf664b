"""Denoising autoencoder with two reconstructions from one decoder: as acquired, and healthy.

A small U-Net-style encoder-decoder maps a low-dose slice to two images: the denoised slice (what
the scanner saw, lesions included) and a pseudo-healthy reconstruction (the same anatomy without
lesions). Their difference is the anomaly map; its peak is the slice's anomaly score. The
encoder's bottleneck, pooled, is the per-slice embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(4, c_out),
        nn.SiLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.SiLU(inplace=True),
    )


class Encoder(nn.Module):
    """Three scales (full, 1/2, 1/4) and a bottleneck at 1/8 resolution."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]
        self.stages = nn.ModuleList(
            [_block(1, widths[0])]
            + [_block(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = image
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class DenoisingAutoencoder(nn.Module):
    """Outputs (denoised, healthy, anomaly_score): images (B, 1, H, W) and a score (B,)."""

    def __init__(self, width: int = 12, score_window: int = 3) -> None:
        super().__init__()
        self.encoder = Encoder(width)
        widths = [width, 2 * width, 4 * width, 4 * width]
        self.ups = nn.ModuleList(
            [_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(3))]
        )
        self.head = nn.Conv2d(width, 2, 1)
        self.score_window = score_window

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = up(torch.cat([x, skip], dim=1))
        return self.head(x)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        residual = self.decode(self.encoder(image))
        denoised = image + residual[:, :1]
        healthy = image + residual[:, 1:]
        return denoised, healthy, self.anomaly_score(denoised, healthy)

    def anomaly_score(self, denoised: torch.Tensor, healthy: torch.Tensor) -> torch.Tensor:
        """Peak of the locally averaged squared difference: a lesion is a patch, not a pixel."""
        error = F.avg_pool2d((denoised - healthy) ** 2, self.score_window, stride=1)
        return error.flatten(1).amax(dim=1)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Per-slice feature vector: the bottleneck, average- and max-pooled."""
        bottleneck = self.encoder(image)[-1]
        return torch.cat([bottleneck.mean(dim=(-2, -1)), bottleneck.amax(dim=(-2, -1))], dim=1)
