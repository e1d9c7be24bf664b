"""Detector: lesion boxes with scores in the CenterNet style (centre heatmap, offset, size).

The network predicts on a grid STRIDE times coarser than the image. Each lesion is a Gaussian
peak on the heatmap at its box centre; the peak's cell also regresses the centre's offset within
the cell and the box's log width and height. Decoding keeps local maxima, then NMS. Everything
but the network lives here; a plugin writes `build()` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeimg.sdk.datasets import SliceData, segmentation_folder
from edgeimg.sdk.metrics import detection_scores, nms
from edgeimg.sdk.slices import SliceModel

STRIDE = 2
"""Output grid step in pixels: the network's maps are (H / STRIDE, W / STRIDE)."""
MAX_BOXES = 4
"""Ground-truth boxes kept per slice (synthetic slices carry at most two)."""


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


class Detector(SliceModel):
    """Network: image (N, 1, H, W) in [0, 1] to `maps` (N, 5, H/2, W/2): heatmap logit,
    centre offset x/y and log box width/height in grid cells (see `decode`).

    Write `build()`. Provided: `example_inputs`, `datasets` (train), `heldout` (evaluate,
    build-engine), `loss` (train), `metrics` map50/recall50 (train, evaluate, build-engine) and
    `postprocess` (run, serve: boxes in pixels with scores).
    """

    output_names = ("maps",)
    dynamic_axes = {"image": {0: "batch"}, "maps": {0: "batch"}}
    score_threshold = 0.3

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
