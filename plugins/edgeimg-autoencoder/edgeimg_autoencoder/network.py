"""Denoising autoencoder with two reconstructions from one decoder: as acquired, and healthy.

A small U-Net maps a low-dose slice at native resolution to two images: the denoised slice (what
the scanner saw, lesions included) and a pseudo-healthy reconstruction (the same anatomy without
lesions). Their difference, averaged over lesion-sized windows inside soft tissue, is the anomaly
map; its peak is the slice's anomaly score. The encoder's bottleneck, pooled, is the embedding.

Fully convolutional and without normalization layers, so it trains on patches and runs on whole
slices alike. The first step folds 2 x 2 pixel blocks into channels (pixel unshuffle, as FFDNet
does), so the full-resolution work is a quarter of a plain U-Net's: CT noise is correlated over a
few pixels anyway, and the four sub-images keep every pixel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: soft tissue in the [0, 1] window 40/400: -80 to 200 HU (fat, air and bone are not lesion hosts)
TISSUE = (0.2, 0.9)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.SiLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.SiLU(inplace=True),
    )


class Encoder(nn.Module):
    """Pixel unshuffle, then scales 1/2 to 1/32 of the input: a wide view for the healthy head."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [_block(4, widths[0])]
            + [_block(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = F.pixel_unshuffle(image, 2)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class DenoisingAutoencoder(nn.Module):
    """Outputs (denoised, healthy, anomaly_score): images (B, 1, H, W) and a score (B,).

    H and W must be even (pixel unshuffle); 512 x 512 slices and 96-pixel patches are.
    """

    def __init__(
        self, widths: tuple[int, ...] = (24, 32, 48, 48, 48), score_window: int = 11
    ) -> None:
        super().__init__()
        self.encoder = Encoder(widths)
        self.ups = nn.ModuleList(
            [_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))]
        )
        self.head = nn.Conv2d(widths[0], 2 * 4, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # start as the identity: never worse than the input
        nn.init.zeros_(self.head.bias)
        self.score_window = score_window

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = up(torch.cat([x, skip], dim=1))
        return F.pixel_shuffle(self.head(x), 2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        residual = self.decode(self.encoder(image))
        denoised, healthy = image + residual[:, :1], image + residual[:, 1:]
        if not self.training:  # clipping in training would stop gradients where it bites
            denoised, healthy = denoised.clamp(0.0, 1.0), healthy.clamp(0.0, 1.0)
        return denoised, healthy, self.anomaly_score(denoised, healthy)

    def anomaly_score(self, denoised: torch.Tensor, healthy: torch.Tensor) -> torch.Tensor:
        """Peak of the local mean of (denoised - healthy) inside soft tissue.

        A lesion is a blob, not a pixel: averaging the signed difference over a window cancels
        residual noise and thin edge disagreements, and the tissue mask (from the healthy image,
        averaged the same way) keeps fat, air and bone boundaries out.
        """

        def local_mean(x: torch.Tensor) -> torch.Tensor:
            window = self.score_window
            return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)

        level = local_mean(healthy)
        tissue = ((level > TISSUE[0]) & (level < TISSUE[1])).to(denoised.dtype)
        return (local_mean(denoised - healthy).abs() * tissue).flatten(1).amax(dim=1)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Per-slice feature vector: the bottleneck, average- and max-pooled."""
        bottleneck = self.encoder(image)[-1]
        return torch.cat([bottleneck.mean(dim=(-2, -1)), bottleneck.amax(dim=(-2, -1))], dim=1)
