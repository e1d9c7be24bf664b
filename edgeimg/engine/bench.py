"""Backends side by side: latency per batch and images/s, as ratios to torch FP32 eager.

Configurations are measured in interleaved rounds so that noise from other work on the machine
falls on all of them alike; torch runs with as many threads as ONNX Runtime (physical cores).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.backends.base import Runner, physical_cores
from edgeimg.backends.torch import TorchRunner
from edgeimg.device import cpu_model
from edgeimg.engine.build import AUTO, PRECISIONS, Backends, named_backend
from edgeimg.engine.errors import EngineError
from edgeimg.engine.load import load_engine
from edgeimg.engine.network import implementation, load_network
from edgeimg.sdk.model import ModelSpec

WARMUP = 3
ROUNDS = 5


@dataclass
class _Subject:
    backend: str
    precision: str
    runner: Runner
    latencies: list[float] = field(default_factory=list)
    #: for the auto engine: the backend and precision its race chose
    chosen: str | None = None


def configurations(
    backends: Backends, names: list[str] | None, precisions: list[str] | None
) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """(backend, precision) pairs to measure, torch FP32 first, and the ones skipped with why.

    ("auto", "auto") comes last when `precisions` is None or names auto: the winner of the
    `--precision auto` race over every backend, measured beside what it raced against.
    """
    names = names or [b.name for b in backends.values() if b.missing() is None]
    wanted, skipped = [("torch", "fp32")], []
    for name in names:
        backend = named_backend(backends, name)
        for precision in [p for p in precisions or PRECISIONS if p != AUTO]:
            reason = backend.missing() or backend.unsupported(precision)
            if reason:
                skipped.append({"backend": name, "precision": precision, "reason": reason})
            elif not reason and (name, precision) not in wanted:
                wanted.append((name, precision))
    if precisions is None or AUTO in precisions:
        wanted.append((AUTO, AUTO))
    return wanted, skipped


def measure(
    runners: list[Runner], arrays: tuple[np.ndarray, ...], seconds: float, rounds: int = ROUNDS
) -> list[list[float]]:
    """Seconds per call of each runner, measured in interleaved rounds after a warm-up, so that
    load from other processes falls on all of them alike."""
    for runner in runners:
        for _ in range(WARMUP):
            runner.run(*arrays)
    latencies: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for runner, times in zip(runners, latencies, strict=True):
            deadline = time.perf_counter() + seconds / rounds / len(runners)
            while True:
                start = time.perf_counter()
                runner.run(*arrays)
                times.append(time.perf_counter() - start)
                if start > deadline:
                    break
    return latencies


def _summary(subject: _Subject, batch: int) -> dict[str, Any]:
    latencies = np.asarray(subject.latencies)
    return {
        "backend": subject.backend,
        "precision": subject.precision,
        **({"chosen": subject.chosen} if subject.chosen else {}),
        "images_per_s": batch / float(latencies.mean()),
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p95_ms": float(np.percentile(latencies, 95) * 1e3),
        "iterations": int(latencies.size),
    }


def bench(
    spec: ModelSpec,
    backends: Backends,
    names: list[str] | None = None,
    precisions: list[str] | None = None,
    batch: int = 8,
    seconds: float = 10.0,
    engines_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Measure each configuration (building missing engines) and compare with torch FP32.

    `backends` is the registry's name → Backend mapping; `names` the ones to measure."""
    wanted, skipped = configurations(backends, names, precisions)
    arrays = implementation(spec).example_inputs(batch)
    subjects = []
    for backend, precision in wanted:
        chosen = None
        if (backend, precision) == ("torch", "fp32"):
            runner: Runner = TorchRunner(load_network(spec)[0], "fp32")
        else:
            try:
                runner = load_engine(spec, backends, backend, precision, engines_dir, build=True)
            except EngineError as error:  # e.g. INT8 refused by verification: report, go on
                skipped.append({"backend": backend, "precision": precision, "reason": str(error)})
                continue
            if precision == AUTO:
                chosen = f"{runner.manifest['backend']} {runner.manifest['precision']}"
        subjects.append(_Subject(backend, precision, runner, chosen=chosen))
    timings = measure([s.runner for s in subjects], arrays, seconds)
    for subject, latencies in zip(subjects, timings, strict=True):
        subject.latencies = latencies
    results = [_summary(s, batch) for s in subjects]
    baseline = results[0]["images_per_s"]
    rates = {(r["backend"], r["precision"]): r["images_per_s"] for r in results}
    onnxruntime = rates.get(("onnxruntime", "fp32"))
    for result in results:
        result["ratio_to_torch_fp32"] = result["images_per_s"] / baseline
        if onnxruntime:
            result["ratio_to_onnxruntime_fp32"] = result["images_per_s"] / onnxruntime
    return {
        "model": spec.name,
        "batch": batch,
        "device": {"cpu": cpu_model(), "threads": physical_cores()},
        "results": results,
        "skipped": skipped,
    }
