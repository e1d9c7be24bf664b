"""Results as JSON lines: one line per input file, whatever became of it.

A series is inferred and written as a whole, but people look for their files: `run` turns each
series result into one row per file, each with that file's own results (per frame), the series'
outputs and, for sequence models, the series-level result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SERIES_KEYS = ("files", "sop_instance_uids", "frames", "results")


def write_lines(lines: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Append `lines` to out_dir/results.jsonl in one write and return the file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    return [path]


def file_rows(line: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per file of a series line (a line that names one `file` is already a row)."""
    if "files" not in line:
        return [line]
    shared = {key: value for key, value in line.items() if key not in SERIES_KEYS}
    files = line["files"]
    uids = line.get("sop_instance_uids") or [None] * len(files)
    frames = line.get("frames") or []
    results = line.get("results")
    per_file = (
        _split(results, frames) if results is not None and len(frames) == len(files) else None
    )
    rows = []
    for index, name in enumerate(files):
        row = {**shared, "file": name}
        if uids[index] is not None:
            row["sop_instance_uid"] = uids[index]
        if per_file is not None:
            row["results"] = per_file[index]
        elif results is not None:
            row["series_results"] = results
        rows.append(row)
    return rows


def _split(results: list[Any], frames: list[int]) -> list[list[Any]] | None:
    """Per-frame results cut into one list per file, or None when they are per series."""
    if len(results) != sum(frames):
        return None
    cuts, start = [], 0
    for count in frames:
        cuts.append(results[start : start + count])
        start += count
    return cuts


def finding(results: list[dict[str, Any]]) -> str:
    """What a model found in a series, in a few words (the table's finding column)."""
    if not results:
        return ""
    first = results[0]
    if "label" in first:
        positive = sum(bool(item["label"]) for item in results)
        top = max(float(item["probability"]) for item in results)
        return f"lesion on {positive}/{len(results)} slices (max p={top:.2f})"
    if "positive" in first:
        return f"{'positive' if first['positive'] else 'negative'} (p={first['probability']:.2f})"
    if "pixels" in first:
        slices = sum(item["pixels"] > 0 for item in results)
        return f"lesion on {slices}/{len(results)} slices ({sum(r['pixels'] for r in results)} px)"
    if "boxes" in first:
        boxes = sum(len(item["boxes"]) for item in results)
        return f"{boxes} box(es) on {sum(bool(r['boxes']) for r in results)}/{len(results)} slices"
    if "anomaly_score" in first:
        return f"max anomaly score {max(float(r['anomaly_score']) for r in results):.3f}"
    return f"{len(results)} slice(s) enhanced"
