"""Conditional GAN networks: a residual generator and a PatchGAN discriminator (pix2pix style).

Only the generator is deployed; the discriminator exists during training and judges
(low-dose, candidate) pairs patch by patch, which rewards realistic texture and edges where an
L1 loss alone settles for their blurred average.
"""

from __future__ import annotations

import torch
from torch import nn


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(4, channels),
            nn.SiLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """Low-dose slice (B, 1, H, W) to a normal-dose estimate: residual blocks at half
    resolution, sub-pixel upsampling, a full-resolution skip, and a global residual."""

    def __init__(self, width: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.SiLU(inplace=True))
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(inplace=True)
        )
        self.blocks = nn.Sequential(*(_Residual(2 * width) for _ in range(blocks)))
        self.up = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.PixelShuffle(2))
        self.tail = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.SiLU(inplace=True),
            nn.Conv2d(width, 1, 3, padding=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        full = self.stem(image)
        half = self.blocks(self.down(full))
        return image + self.tail(torch.cat([full, self.up(half)], dim=1))


class PatchDiscriminator(nn.Module):
    """Real/fake logits per overlapping patch of the (condition, image) pair."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.GroupNorm(4, 2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([condition, image], dim=1))
