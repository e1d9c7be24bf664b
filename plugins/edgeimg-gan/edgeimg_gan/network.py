"""Conditional GAN networks: a residual generator and a PatchGAN discriminator (pix2pix style).

Only the generator is deployed; the discriminator exists during training and judges
(low-dose, candidate) pairs patch by patch, which rewards realistic texture and edges where an
L1 loss alone settles for their blurred average.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """Low-dose slice (B, 1, H, W), H and W multiples of 4, to a normal-dose estimate.

    Fully convolutional with no normalization layers, so it trains on patches and runs on whole
    slices alike. 2 x 2 pixel blocks are folded into channels (pixel unshuffle); residual blocks
    work at half and quarter resolution, joined by a skip; the output is the input plus a
    learned residual, clipped in eval to the window's [0, 1] as the input is.
    """

    def __init__(self, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.SiLU(inplace=True), _Residual(width)
        )
        self.low = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(inplace=True),
            *(_Residual(2 * width) for _ in range(blocks)),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.PixelShuffle(2),
        )
        self.tail = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.SiLU(inplace=True),
            _Residual(width),
            nn.Conv2d(width, 4, 3, padding=1),
        )
        nn.init.zeros_(self.tail[-1].weight)  # start as the identity: never worse than the input
        nn.init.zeros_(self.tail[-1].bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        half = self.stem(F.pixel_unshuffle(image, 2))
        residual = self.tail(torch.cat([half, self.low(half)], dim=1))
        enhanced = image + F.pixel_shuffle(residual, 2)
        return enhanced if self.training else enhanced.clamp(0.0, 1.0)


def detail_energy(image: torch.Tensor) -> torch.Tensor:
    """Log of the local energy of the image's high-pass detail, scaled to about [0, 1].

    Leftover noise is a few hundredths of the window: fed raw, a discriminator needs hundreds of
    steps to notice it. On a log scale noisy and clean patches differ by whole units.
    """
    detail = image - F.avg_pool2d(image, 3, 1, 1, count_include_pad=False)
    energy = F.avg_pool2d(detail.square(), 3, 1, 1, count_include_pad=False)
    return torch.log10(energy + ENERGY_FLOOR) / -math.log10(ENERGY_FLOOR) + 1.0


#: below this local detail energy a patch counts as perfectly smooth (noise std about 0.001)
ENERGY_FLOOR = 1e-6


class PatchDiscriminator(nn.Module):
    """Real/fake logits per overlapping patch of the (condition, detail energy) pair.

    Spectral normalization keeps its gradients to the generator bounded; there is no per-sample
    normalization, which would scale away the amount of leftover noise.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(2, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(2 * width, 1, 3, padding=1)),
        )

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([condition, detail_energy(image)], dim=1))
