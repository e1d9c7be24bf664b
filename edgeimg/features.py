"""Per-slice embeddings for search and clustering: features.npy plus a features.csv index.

Only models whose implementation has `embed(network, images)` give features; the embedding
comes from the torch network (not the engine), because engines export only the outputs `run`
needs. Each call appends, so one folder can collect features over many series and runs; row
`i` of features.csv describes row `i` of features.npy.
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.pipeline.decode import Decoded
from edgeimg.sdk.model import ModelSpec

FEATURES_NPY = "features.npy"
FEATURES_CSV = "features.csv"
COLUMNS = ("row", "study_uid", "series_uid", "sop_instance_uid", "frame", "file")
EMBED_BATCH = 64


class FeaturesUnsupported(ValueError):
    """The model has no `embed`, so it cannot give features."""


def supports_features(spec: ModelSpec) -> bool:
    """Checked on the class, so asking never loads weights."""
    return callable(getattr(spec.load(), "embed", None))


@functools.lru_cache(maxsize=4)
def _embedder(spec: ModelSpec) -> tuple[Any, Any]:
    """The implementation and its network, once per spec: loading weights is the slow part."""
    from edgeimg.sdk.training import load_network

    return spec.load()(spec), load_network(spec)


def embed(spec: ModelSpec, decoded_items: list[Decoded]) -> np.ndarray:
    """(N, D) float32 embeddings, one per frame of the decoded files, in order."""
    if not supports_features(spec):
        raise FeaturesUnsupported(f"model {spec.name!r} does not give features (it has no embed)")
    implementation, network = _embedder(spec)
    images = np.concatenate([item.inputs for item in decoded_items]).astype(np.float32)
    chunks = [
        implementation.embed(network, images[start : start + EMBED_BATCH])
        for start in range(0, len(images), EMBED_BATCH)
    ]
    return np.concatenate(chunks).astype(np.float32)


def _index_rows(decoded_items: list[Decoded], first_row: int) -> list[dict[str, Any]]:
    rows = []
    for item in decoded_items:
        header = item.header
        for frame in range(len(item.inputs)):
            rows.append(
                {
                    "row": first_row + len(rows),
                    "study_uid": str(header.get("StudyInstanceUID", "")),
                    "series_uid": str(header.get("SeriesInstanceUID", "")),
                    "sop_instance_uid": str(header.get("SOPInstanceUID", "")),
                    "frame": frame,
                    "file": str(item.path),
                }
            )
    return rows


def _existing(npy: Path, csv_path: Path) -> np.ndarray | None:
    """Features already in the folder, checked against their index so appends stay aligned."""
    if not npy.exists():
        return None
    if not csv_path.is_file():
        raise ValueError(f"{npy} has no index beside it ({csv_path.name}); move it away first")
    features = np.load(npy)
    with csv_path.open(newline="", encoding="utf-8") as handle:
        indexed = sum(1 for _ in csv.DictReader(handle))
    if indexed != len(features):
        raise ValueError(f"{csv_path} has {indexed} rows but {npy} has {len(features)}")
    return features


def write_features(
    spec: ModelSpec, decoded_items: list[Decoded], out_dir: Path
) -> tuple[Path, Path]:
    """Append one embedding per slice to out_dir/features.npy and its row to features.csv."""
    out_dir = Path(out_dir)
    npy, csv_path = out_dir / FEATURES_NPY, out_dir / FEATURES_CSV
    new = embed(spec, decoded_items) if decoded_items else None
    if new is None:
        return npy, csv_path
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = _existing(npy, csv_path)
    if existing is not None and existing.shape[1:] != new.shape[1:]:
        raise ValueError(
            f"{npy} holds {existing.shape[1]}-d features; model {spec.name!r} gives {new.shape[1]}"
        )
    combined = new if existing is None else np.concatenate([existing, new])
    temp = npy.with_name(npy.name + ".tmp")
    with temp.open("wb") as handle:
        np.save(handle, combined)
    rows = _index_rows(decoded_items, 0 if existing is None else len(existing))
    with csv_path.open("w" if existing is None else "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if existing is None:
            writer.writeheader()
        writer.writerows(rows)
    os.replace(temp, npy)
    return npy, csv_path
