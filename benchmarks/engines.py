"""Engines side by side for every registered model with trained weights, batch 8, in one run:
torch FP32 eager, ONNX Runtime FP32/INT8, OpenVINO FP32/BF16/INT8 and the `--precision auto`
winner (its race over every backend and precision this device supports).

Bars (docs/engines.md): for `cnn` on a CPU, ONNX Runtime FP32 at least 3.0x torch FP32 eager (same
thread count), and ONNX Runtime INT8 at least 1.6x ONNX Runtime FP32 with verification passing.
Issue 17: the auto engine at least 3.0x ONNX Runtime FP32 for `cnn` and `unet`, never slower than
it for any model, with its task metric within the model's tolerance, and INT8 chosen only where
it was the fastest candidate that passed. For the image models the report adds a roofline: FLOPs
per image, this CPU's SGEMM (FP32) and BF16 matrix-product peaks, each engine's share of them.
`python -m benchmarks.engines --weights cnn=PATH` measures weights that are not shipped yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.roofline import bf16_gemm_gflops, roofline
from edgeimg.engine.bench import bench
from edgeimg.engine.load import find_engine
from edgeimg.engine.race import find_raced
from edgeimg.plugins import get_registry

BATCH = 8
SECONDS = 20.0
BACKENDS = ["onnxruntime", "openvino"]
PRECISIONS = ["fp32", "bf16", "int8", "auto"]
BARS = {"onnxruntime fp32 / torch fp32": 3.0, "onnxruntime int8 / onnxruntime fp32": 1.6}
#: the auto engine over ONNX Runtime FP32 in the same run (issue 17); other models: never slower
AUTO_BARS = {"cnn": 3.0, "unet": 3.0}
#: models whose figures are also set against this CPU's measured peaks (benchmarks.roofline):
#: the convolutional ones, whose FLOPs the roofline counts
ROOFLINE_MODELS = ("autoencoder", "cnn", "detector", "gan", "unet")


def _ratio(results: list[dict[str, Any]], top: str, bottom: str) -> float | None:
    rate = {f"{r['backend']} {r['precision']}": r["images_per_s"] for r in results}
    if top in rate and bottom in rate:
        return rate[top] / rate[bottom]
    return None


def _auto(spec: Any, engines_dir: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The auto engine's race, its metric against the tolerance and its ratio to ORT FP32.

    Bars are judged on medians (a stall on a shared box moves the mean); the auto engine *is*
    ORT FP32 where that won the race, and cannot be slower than itself.
    """
    found = find_raced(spec, get_registry().backends, engines_dir)
    if found is None:
        return {"built": False}
    manifest = found[1]
    race, verification = manifest["race"], manifest["verification"]
    median = {f"{r['backend']} {r['precision']}": r["p50_ms"] for r in results}
    median_ratio = (
        median["onnxruntime fp32"] / median["auto auto"]
        if {"onnxruntime fp32", "auto auto"} <= set(median)
        else None
    )
    chosen = f"{manifest['backend']} {manifest['precision']}"
    bar = AUTO_BARS.get(spec.name, 1.0)
    engines = [r for r in results if r["backend"] not in ("auto", "torch")]
    return {
        "chosen": chosen,
        "race": race,
        "metric": verification["metric"],
        "torch_fp32": verification["torch_fp32"],
        "engine": verification["engine"],
        "drop": verification.get("drop"),
        "tolerance": verification["tolerance"],
        "within_tolerance": bool(verification["passed"]),
        "ratio_to_onnxruntime_fp32": _ratio(results, "auto auto", "onnxruntime fp32"),
        "median_ratio_to_onnxruntime_fp32": median_ratio,
        "bar": bar,
        "met": (median_ratio is not None and median_ratio >= bar)
        or (bar == 1.0 and chosen == "onnxruntime fp32"),
        "int8_only_if_fastest": manifest["precision"] != "int8"
        or all(r["p50_ms"] >= median[chosen] for r in engines if chosen in median),
    }


def _model(name: str, engines_dir: Path, seconds: float, bf16_peak: float | None) -> dict[str, Any]:
    registry = get_registry()
    spec = registry.model(name)
    report = bench(spec, registry.backends, BACKENDS, PRECISIONS, BATCH, seconds, engines_dir)
    int8 = find_engine(spec, registry.backend("onnxruntime"), "int8", engines_dir, BATCH)
    refused = [
        s["reason"]
        for s in report["skipped"]
        if s["precision"] == "int8" and s["backend"] == "onnxruntime"
    ]
    report["int8_verification"] = int8[1]["verification"] if int8 else {"refused": refused}
    report["auto"] = _auto(spec, engines_dir, report["results"])
    if name in ROOFLINE_MODELS:
        report["roofline"] = roofline(spec, report["results"], bf16_peak)
    report["bars"] = {}
    for label, bar in BARS.items():
        top, bottom = (part.strip() for part in label.split("/"))
        ratio = _ratio(report["results"], top, bottom)
        report["bars"][label] = {
            "bar": bar,
            "ratio": ratio,
            "met": ratio is not None and ratio >= bar,
        }
    return report


def _document(models: dict, skipped: dict, bf16_peak: float | None) -> dict[str, Any]:
    summary = {
        name: {
            "auto_chose": report["auto"].get("chosen"),
            "auto_vs_onnxruntime_fp32_median": report["auto"].get(
                "median_ratio_to_onnxruntime_fp32"
            ),
            "auto_vs_onnxruntime_fp32_mean": report["auto"].get("ratio_to_onnxruntime_fp32"),
            "bar": report["auto"].get("bar"),
            "met": report["auto"].get("met"),
            "metric_within_tolerance": report["auto"].get("within_tolerance"),
        }
        for name, report in models.items()
    }
    return {
        "batch": BATCH,
        "bf16_gemm_peak_gflops": bf16_peak,
        "auto_summary": summary,
        "models": models,
        "skipped": skipped,
    }


def run(
    weights: dict[str, str] | None = None,
    seconds: float = SECONDS,
    order: list[str] | None = None,
    engines_dir: Path | None = None,
    each: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Bench every model that has weights (overrides in `weights`; `order` first); list the
    others as skipped. `each` gets the report so far after every model (long runs on a busy
    box keep what they measured); `engines_dir` keeps the engines (default: a temporary one)."""
    registry = get_registry()
    for name, path in (weights or {}).items():
        registry.models[name] = dataclasses.replace(
            registry.model(name), weights=str(Path(path).resolve())
        )
    models, skipped = {}, {}
    bf16_peak = bf16_gemm_gflops()
    names = [*(order or []), *sorted(set(registry.models) - set(order or []))]
    with tempfile.TemporaryDirectory(prefix="edgeimg-bench-") as scratch:
        root = engines_dir or Path(scratch)
        for name in names:
            path = registry.model(name).weights_path()
            if path is None or not path.is_file():
                skipped[name] = f"no trained weights at {path}"
                continue
            try:
                models[name] = _model(name, root, seconds, bf16_peak)
            except Exception as error:  # one model's failure is a result, not the end of the run
                skipped[name] = f"{type(error).__name__}: {error}"
            if each is not None:
                each(_document(models, skipped, bf16_peak))
    return _document(models, skipped, bf16_peak)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--models", default="", help="comma-separated models to run first")
    parser.add_argument("--engines-dir", type=Path, help="keep engines here (reused on rerun)")
    args = parser.parse_args(argv)
    weights = dict(item.split("=", 1) for item in args.weights)
    order = [name for name in args.models.split(",") if name]
    from benchmarks.__main__ import write_result

    def partial(report: dict[str, Any]) -> None:
        write_result("engines", {**report, "complete": False})

    report = run(weights, args.seconds, order, args.engines_dir, partial)
    print(write_result("engines", {**report, "complete": True}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
