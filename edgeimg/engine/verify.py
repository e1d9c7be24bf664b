"""Verification: the engine against torch FP32 on the same inputs, by the model's own metric.

A raw difference alone says little (INT8 and BF16 always differ); the task metric on held-out
data says whether the difference matters, so an engine is refused when its metric drops by more
than the spec's tolerance (AUC, Dice, mAP50, PSNR, accuracy: the numbers a clinician knows).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgeimg.backends.base import Runner
from edgeimg.engine.network import reference_batches, run_torch

VERIFY_SEED = 2
VERIFY_ITEMS = 128


def _max_abs(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> float:
    diffs = [
        np.max(np.abs(g.astype(np.float64) - w)) for g, w in zip(got, want, strict=True) if w.size
    ]
    return float(max(diffs, default=0.0))


def _concat(batches: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    return [np.concatenate(parts) for parts in zip(*batches, strict=True)]


def _headline(metrics: dict[str, float], name: str) -> str:
    return name if name in metrics else next(iter(metrics))


def compare(
    runner: Runner, network: Any, impl: Any, batch: int, extra: Iterable[tuple] = ()
) -> dict[str, Any]:
    """Difference and task metrics of engine vs torch FP32 on held-out (and extra) inputs."""
    engine_out, torch_out, targets = [], [], []
    worst = 0.0
    for inputs, target in reference_batches(impl, VERIFY_SEED, batch, VERIFY_ITEMS):
        got, want = runner.run(*inputs), run_torch(network, inputs)
        worst = max(worst, _max_abs(got, want))
        engine_out.append(got)
        torch_out.append(want)
        targets.append(target)
    extra_worst = None
    for inputs in extra:
        diff = _max_abs(runner.run(*inputs), run_torch(network, inputs))
        extra_worst = max(extra_worst or 0.0, diff)
    torch_metrics = impl.metrics(_concat(torch_out), _concat(targets))
    engine_metrics = impl.metrics(_concat(engine_out), _concat(targets))
    metric = _headline(torch_metrics, impl.spec.metric)
    change = float(engine_metrics[metric]) - float(torch_metrics[metric])
    drop = (-change if impl.spec.higher_is_better else change) + 0.0  # no -0.0 in manifests
    return {
        "verified": True,
        "reference": f"synthetic held-out, seed {VERIFY_SEED}, {len(_concat(targets)[0])} items",
        "max_abs_diff": worst,
        "calibration_max_abs_diff": extra_worst,
        "metric": metric,
        "torch_fp32": float(torch_metrics[metric]),
        "engine": float(engine_metrics[metric]),
        "drift": abs(change),
        "drop": drop,
        "tolerance": impl.spec.tolerance,
        "passed": drop <= impl.spec.tolerance,
        "metrics_torch_fp32": {k: float(v) for k, v in torch_metrics.items()},
        "metrics_engine": {k: float(v) for k, v in engine_metrics.items()},
    }


def skipped() -> dict[str, Any]:
    """What the manifest says when --no-verify was given."""
    return {"verified": False, "reason": "skipped with --no-verify"}
