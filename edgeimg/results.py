"""Results as JSON lines: one line per input series or slice, whatever became of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Append one result to out_dir/results.jsonl and return the file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(result, sort_keys=True) + "\n")
    return [path]
