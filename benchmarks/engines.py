"""Engines side by side for every registered model with trained weights, batch 8.

Bars (docs/engines.md): for `cnn` on a CPU, ONNX Runtime FP32 at least 3.0x torch FP32 eager (same
thread count), and ONNX Runtime INT8 at least 1.6x ONNX Runtime FP32 with verification passing.
For `cnn` and `unet` the report adds a roofline: FLOPs per image, ONNX Runtime's SGEMM peak on
this CPU, each FP32 engine's share of it, and the largest ratio to torch any engine could reach.
`python -m benchmarks.engines --weights cnn=PATH` measures weights that are not shipped yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.roofline import roofline
from edgeimg.engine.bench import bench
from edgeimg.engine.load import find_engine
from edgeimg.plugins import get_registry

BATCH = 8
SECONDS = 20.0
BARS = {"onnxruntime fp32 / torch fp32": 3.0, "onnxruntime int8 / onnxruntime fp32": 1.6}
#: models whose FP32 figures are also set against this CPU's measured peak (benchmarks.roofline)
ROOFLINE_MODELS = ("cnn", "unet")


def _ratio(results: list[dict[str, Any]], top: str, bottom: str) -> float | None:
    rate = {f"{r['backend']} {r['precision']}": r["images_per_s"] for r in results}
    if top in rate and bottom in rate:
        return rate[top] / rate[bottom]
    return None


def _model(name: str, engines_dir: Path, seconds: float) -> dict[str, Any]:
    report = bench(name, ["onnxruntime"], ["fp32", "int8"], BATCH, seconds, engines_dir)
    spec = get_registry().model(name)
    backend = get_registry().backend("onnxruntime")
    int8 = find_engine(spec, backend, "int8", engines_dir)
    refused = [s["reason"] for s in report["skipped"] if s["precision"] == "int8"]
    report["int8_verification"] = int8[1]["verification"] if int8 else {"refused": refused}
    if name in ROOFLINE_MODELS:
        report["roofline"] = roofline(spec, report["results"])
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


def run(weights: dict[str, str] | None = None, seconds: float = SECONDS) -> dict[str, Any]:
    """Bench every model that has weights (overrides in `weights`); list the others as skipped."""
    registry = get_registry()
    for name, path in (weights or {}).items():
        registry.models[name] = dataclasses.replace(
            registry.model(name), weights=str(Path(path).resolve())
        )
    models, skipped = {}, {}
    with tempfile.TemporaryDirectory(prefix="edgeimg-bench-") as engines_dir:
        for name, spec in sorted(registry.models.items()):
            path = spec.weights_path()
            if path is None or not path.is_file():
                skipped[name] = f"no trained weights at {path}"
                continue
            try:
                models[name] = _model(name, Path(engines_dir), seconds)
            except Exception as error:  # one model's failure is a result, not the end of the run
                skipped[name] = f"{type(error).__name__}: {error}"
    return {"batch": BATCH, "models": models, "skipped": skipped}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args(argv)
    weights = dict(item.split("=", 1) for item in args.weights)
    from benchmarks.__main__ import write_result

    print(write_result("engines", run(weights, args.seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
