"""Anchor-free lesion detector in the CenterNet style: centre heatmap, sub-cell offset, box size.

The network predicts on a grid STRIDE times coarser than the image. Each lesion is a Gaussian
peak on the heatmap at its box centre; the peak's cell also regresses the centre's offset within
the cell and the box's log width and height. Decoding keeps local maxima, then NMS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeimg.datasets import SliceData, segmentation_folder
from edgeimg.metrics import detection_scores, nms
from edgeimg.slices import SliceModel

STRIDE = 2
MAX_BOXES = 4
"""Ground-truth boxes kept per slice (synthetic slices carry at most two)."""


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


def _pad_boxes(boxes: list[list[tuple[int, int, int, int]]]) -> np.ndarray:
    padded = np.full((len(boxes), MAX_BOXES, 4), -1.0, dtype=np.float32)
    for index, slice_boxes in enumerate(boxes):
        kept = slice_boxes[:MAX_BOXES]
        if kept:
            padded[index, : len(kept)] = kept
    return padded


def _maps(boxes: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Training maps (N, 6, h, w): heatmap, offset x/y, log size w/h, centre-cell mask."""
    rows, cols = grid
    maps = np.zeros((len(boxes), 6, rows, cols), dtype=np.float32)
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    for index, slice_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in slice_boxes:
            if x1 <= x0:
                continue
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            w, h = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
            col, row = min(int(cx), cols - 1), min(int(cy), rows - 1)
            sigma = max(min(w, h) / 4, 0.5)
            peak = np.exp(-((xs - col) ** 2 + (ys - row) ** 2) / (2 * sigma**2))
            maps[index, 0] = np.maximum(maps[index, 0], peak)
            maps[index, 1:6, row, col] = (cx - col, cy - row, np.log(w), np.log(h), 1.0)
    return maps


def _focal(logits: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    probability = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = heatmap >= 1.0 - 1e-6
    positive_loss = torch.log(probability) * (1 - probability) ** 2 * positive
    negative_loss = torch.log(1 - probability) * probability**2 * (1 - heatmap) ** 4 * ~positive
    return -(positive_loss.sum() + negative_loss.sum()) / positive.sum().clamp(min=1)


def decode(
    maps: np.ndarray, threshold: float = 0.05, top_k: int = 10, iou: float = 0.5
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image (boxes (K, 4) in pixels, scores (K,)): heatmap peaks above threshold, then NMS."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    heat = torch.sigmoid(tensor[:, :1])
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    results = []
    for image, peak in zip(tensor, peaks[:, 0], strict=True):
        scores, flat = peak.flatten().topk(min(top_k, peak.numel()))
        keep = scores > threshold
        scores, flat = scores[keep], flat[keep]
        rows, cols = flat // peak.shape[1], flat % peak.shape[1]
        cx = (cols + image[1, rows, cols]) * STRIDE
        cy = (rows + image[2, rows, cols]) * STRIDE
        w = torch.exp(image[3, rows, cols].clamp(max=6)) * STRIDE
        h = torch.exp(image[4, rows, cols].clamp(max=6)) * STRIDE
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1).numpy()
        scores = scores.numpy()
        kept = nms(boxes, scores, iou) if len(boxes) else np.zeros(0, dtype=np.int64)
        results.append((boxes[kept].reshape(-1, 4), scores[kept]))
    return results


class DetectorModel(SliceModel):
    """Lesion boxes with scores; output `maps` (N, 5, H/2, W/2), decoded by `postprocess`."""

    output_names = ("maps",)
    dynamic_axes = {"image": {0: "batch"}, "maps": {0: "batch"}}
    epochs = 12
    batch_size = 32
    learning_rate = 3e-3
    score_threshold = 0.3

    def build(self) -> nn.Module:
        return CenterNet()

    def target(self, data: SliceData) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = self.spec.input.size
        maps = _maps(data.boxes, (height // STRIDE, width // STRIDE))
        return torch.from_numpy(maps), torch.from_numpy(_pad_boxes(data.boxes))

    def read_folder(self, data_dir: Path) -> SliceData:
        return segmentation_folder(data_dir, self.spec.input)

    def loss(self, outputs: torch.Tensor, targets: tuple[torch.Tensor, ...]) -> torch.Tensor:
        maps = targets[0]
        centre = maps[:, 5:6]
        count = centre.sum().clamp(min=1)
        offset = (F.l1_loss(outputs[:, 1:3], maps[:, 1:3], reduction="none") * centre).sum()
        size = (F.l1_loss(outputs[:, 3:5], maps[:, 3:5], reduction="none") * centre).sum()
        return _focal(outputs[:, :1], maps[:, :1]) + (offset + size) / count

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        """AP and recall at IoU 0.5 over every detection scoring above 0.05."""
        truths = [boxes[boxes[:, 0] >= 0] for boxes in targets[1]]
        scores = detection_scores(decode(outputs[0]), truths, iou=0.5)
        return {"map50": scores["ap"], "recall50": scores["recall"]}

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        results = []
        for boxes, scores in decode(outputs[0], threshold=self.score_threshold):
            results.append(
                {
                    "boxes": [[round(float(v), 1) for v in box] for box in boxes],
                    "scores": [float(s) for s in scores],
                }
            )
        return results
