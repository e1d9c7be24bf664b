"""The three supervised slice models: shapes, learning, post-processing, shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeimg.plugins import get_registry
from edgeimg.sdk.detect import STRIDE
from edgeimg.sdk.metrics import auc, box_iou, detection_scores, dice, nms
from edgeimg.sdk.training import evaluate
from tests.models import implementation_of, two_threads  # noqa: F401 - fixture used via pytestmark

MODELS = ("cnn", "unet", "detector")
BARS = {"cnn": ("auc", 0.95), "unet": ("dice", 0.80), "detector": ("map50", 0.80)}


pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_forward_shapes(name: str, batch: int) -> None:
    implementation = implementation_of(name)
    network = implementation.build().eval()
    (example,) = implementation.example_inputs(batch)
    with torch.no_grad():
        output = network(torch.from_numpy(example))
    height, width = implementation.spec.input.size
    expected = {"cnn": (batch, 1), "unet": (batch, 1, height, width)}
    expected["detector"] = (batch, 5, height // STRIDE, width // STRIDE)
    assert tuple(output.shape) == expected[name]
    assert len(implementation.postprocess((output.numpy(),))) == batch


@pytest.mark.parametrize("name", MODELS)
def test_loss_falls_on_a_tiny_batch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    implementation = implementation_of(name)
    monkeypatch.setattr(implementation, "train_size", 8)
    monkeypatch.setattr(implementation, "val_size", 2)
    train_set, _ = implementation.datasets(seed=3)
    inputs, *targets = train_set[:]
    targets = targets[0] if len(targets) == 1 else tuple(targets)
    torch.manual_seed(0)
    network = implementation.build()
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3)
    losses = []
    for _ in range(16):
        loss = implementation.loss(network(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9


def test_postprocess_results() -> None:
    cnn = implementation_of("cnn").postprocess((np.array([[3.0], [-3.0]], dtype=np.float32),))
    assert cnn[0]["label"] is True and cnn[1]["label"] is False
    assert 0.9 < cnn[0]["probability"] < 1.0
    mask = np.full((1, 1, 8, 8), -5.0, dtype=np.float32)
    mask[0, 0, 2:4, 2:5] = 5.0
    unet = implementation_of("unet").postprocess((mask,))
    assert unet[0]["pixels"] == 6 and unet[0]["mask"].shape == (8, 8)
    maps = np.zeros((1, 5, 24, 24), dtype=np.float32)
    maps[0, 0] = -8.0
    maps[0, 0, 10, 5] = 4.0
    maps[0, 1:3, 10, 5] = 0.5
    maps[0, 3:5, 10, 5] = np.log(2.0)
    (detected,) = implementation_of("detector").postprocess((maps,))
    cx, cy = 5.5 * STRIDE, 10.5 * STRIDE
    assert detected["boxes"] == [[cx - STRIDE, cy - STRIDE, cx + STRIDE, cy + STRIDE]]
    assert detected["scores"][0] > 0.9


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)
    labels = rng.random(60) < 0.4
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels] for n in scores[~labels]]
    assert auc(scores, labels) == pytest.approx(np.mean(pairs))
    assert auc(scores, np.zeros(60, bool)) == 0.5


def test_dice_and_iou() -> None:
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2], b[0, :1] = True, True
    assert dice(a, b).tolist() == pytest.approx([2 * 4 / 12, 1.0])
    assert box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [5, 5, 6, 6]]).tolist() == [[1 / 7, 0.0]]


def test_nms_keeps_best_of_overlapping() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=float)
    assert nms(boxes, np.array([0.5, 0.9, 0.7])).tolist() == [1, 2]


def test_average_precision_at_iou_half() -> None:
    truth = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10]])]
    perfect = [(t.astype(float), np.array([0.9])) for t in truth]
    assert detection_scores(perfect, truth) == {"ap": 1.0, "recall": 1.0}
    # a false positive ranked first, then one hit; the second object is missed: AP = 1/2 * 1/2
    predictions = [
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([0.5, 0.9])),
        (np.zeros((0, 4)), np.zeros(0)),
    ]
    scores = detection_scores(predictions, truth)
    assert scores["recall"] == 0.5
    assert scores["ap"] == pytest.approx(0.25)
    # a duplicate of a matched box counts as a false positive, not a second hit
    duplicate = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float), np.array([0.9, 0.8]))]
    assert detection_scores(duplicate, truth[:1]) == {"ap": 1.0, "recall": 1.0}
    assert detection_scores([(np.zeros((0, 4)), np.zeros(0))], [np.zeros((0, 4))])["ap"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("seed", [11, 2026])
def test_shipped_weights_meet_their_bar(name: str, seed: int) -> None:
    metric, bar = BARS[name]
    result = evaluate(get_registry().model(name), seed=seed)
    assert result["metrics"][metric] >= bar, result
