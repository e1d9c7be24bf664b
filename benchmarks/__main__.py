"""Run every benchmark module in this package and write its report to results/<module>.json."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, report: dict) -> Path:
    """Write atomically: a half-written result would read as a real one."""
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"{name}.json"
    temp = target.with_suffix(".json.tmp")
    temp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(temp, target)
    return target


def main(only: list[str]) -> int:
    package = Path(__file__).resolve().parent
    names = [m.name for m in pkgutil.iter_modules([str(package)]) if not m.name.startswith("_")]
    for name in names:
        if only and name not in only:
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"benchmark {name} ...", file=sys.stderr)
        print(write_result(name, module.run()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
