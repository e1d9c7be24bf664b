"""Task metrics in plain numpy, shared by every model family so that they all score alike.

Higher is better for every metric here; the training loop keeps the checkpoint with the best
value of the spec's `metric`.
"""

from __future__ import annotations

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logits to probabilities in float64 (no overflow warnings for large logits)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile (an observed value; with 5 values p95 is the largest)."""
    ranked = sorted(values)
    rank = max(1, -(-len(ranked) * percent // 100))
    return ranked[int(rank) - 1]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); 0.5 if one class is absent."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return 0.5
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        stop = start
        while stop + 1 < len(scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of items whose predicted label equals the true one."""
    predicted = np.asarray(predicted).ravel().astype(bool)
    labels = np.asarray(labels).ravel().astype(bool)
    return float((predicted == labels).mean()) if len(labels) else 0.0


def dice(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-item Dice of binary masks (N, ...); 1.0 where both are empty."""
    predicted = np.asarray(predicted).astype(bool).reshape(len(predicted), -1)
    truth = np.asarray(truth).astype(bool).reshape(len(truth), -1)
    overlap = (predicted & truth).sum(axis=1)
    total = predicted.sum(axis=1) + truth.sum(axis=1)
    return np.where(total == 0, 1.0, 2 * overlap / np.maximum(total, 1))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes a (N, 4) and b (M, 4), each (x0, y0, x1, y1)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    keep: list[int] = []
    while len(order):
        best, order = order[0], order[1:]
        keep.append(int(best))
        if len(order):
            order = order[box_iou(boxes[best], boxes[order])[0] < iou]
    return np.asarray(keep, dtype=np.int64)


def detection_scores(
    predictions: list[tuple[np.ndarray, np.ndarray]],
    truths: list[np.ndarray],
    iou: float = 0.5,
) -> dict[str, float]:
    """Average precision and recall at one IoU threshold over a dataset.

    predictions: per image (boxes (N, 4), scores (N,)); truths: per image boxes (M, 4).
    Each true box matches at most one prediction, taken in descending score order over the whole
    dataset; AP is the area under the precision envelope (all-point interpolation, as in
    PASCAL VOC 2010 and later). With no true boxes at all, AP is 1.0 only if nothing is predicted.
    """
    records: list[tuple[float, bool]] = []
    total = sum(len(t) for t in truths)
    for (boxes, scores), truth in zip(predictions, truths, strict=True):
        if len(boxes) == 0:
            continue
        order = np.argsort(-scores, kind="mergesort")
        overlaps = box_iou(boxes[order], truth) if len(truth) else np.zeros((len(order), 0))
        taken = np.zeros(len(truth), dtype=bool)
        for row, index in enumerate(order):
            hit = False
            if overlaps.shape[1]:
                candidates = np.where(~taken, overlaps[row], -1.0)
                best = int(np.argmax(candidates))
                if candidates[best] >= iou:
                    taken[best] = hit = True
            records.append((float(scores[index]), hit))
    if total == 0:
        return {"ap": 1.0 if not records else 0.0, "recall": 1.0}
    if not records:
        return {"ap": 0.0, "recall": 0.0}
    records.sort(key=lambda record: -record[0])
    hits = np.array([hit for _, hit in records], dtype=np.float64)
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / total
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return {"ap": float((steps * envelope).sum()), "recall": float(recall[-1])}
