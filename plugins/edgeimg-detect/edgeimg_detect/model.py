"""Anchor-free lesion detector in the CenterNet style: the network; sdk.Detector does the rest.

The network predicts on a grid sdk.STRIDE times coarser than the image: a centre heatmap, the
centre's sub-cell offset and the box's log width and height (see edgeimg.sdk.detect).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeimg import sdk


def _conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class CenterNet(nn.Module):
    """Encoder to stride 16, decoder back to stride 2 with skips (small lesions need it); 5 maps.

    Output channels: 0 heatmap logit, 1-2 centre offset (x, y) in cells, 3-4 log box size
    (w, h) in cells.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(1, width, 2), _conv(width, width))
        self.down4 = nn.Sequential(_conv(width, width * 2, 2), _conv(width * 2, width * 2))
        self.down8 = nn.Sequential(_conv(width * 2, width * 4, 2), _conv(width * 4, width * 4))
        self.down16 = nn.Sequential(_conv(width * 4, width * 4, 2), _conv(width * 4, width * 4))
        self.up8 = _conv(width * 8, width * 4)
        self.up4 = _conv(width * 6, width * 2)
        self.up2 = _conv(width * 3, width)
        self.heatmap = nn.Sequential(_conv(width, width), nn.Conv2d(width, 1, 1))
        self.boxes = nn.Sequential(_conv(width, width), nn.Conv2d(width, 4, 1))
        nn.init.constant_(self.heatmap[-1].bias, -2.19)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s2 = self.stem(image)
        s4 = self.down4(s2)
        s8 = self.down8(s4)
        s16 = self.down16(s8)
        x = self.up8(torch.cat([F.interpolate(s16, scale_factor=2.0), s8], dim=1))
        x = self.up4(torch.cat([F.interpolate(x, scale_factor=2.0), s4], dim=1))
        x = self.up2(torch.cat([F.interpolate(x, scale_factor=2.0), s2], dim=1))
        return torch.cat([self.heatmap(x), self.boxes(x)], dim=1)


class DetectorModel(sdk.Detector):
    """CenterNet on 96 x 96 slices; target, loss, metrics and decoding come from sdk.Detector."""

    epochs = 12
    batch_size = 32
    learning_rate = 3e-3

    def build(self) -> nn.Module:
        return CenterNet()
