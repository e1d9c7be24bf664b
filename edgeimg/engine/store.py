"""The engine store: `engines/<model>/<key>/` holding the engine, its ONNX and manifest.json.

The key (edgeimg/engine/key.py) hashes everything an engine's validity depends on, so a lookup
is a directory name and any change (weights, precision, runtime version, device) lands in a new
directory. Directories appear whole or not at all: they are written under a temporary name and
renamed into place. A `--precision auto` race is a small record beside them
(`race-<key>.json`) naming the engine it chose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeimg.durable import atomic_file
from edgeimg.engine import key as engine_key
from edgeimg.engine.network import sha256_file

MANIFEST = "manifest.json"
ENV_DIR = "EDGEIMG_ENGINES"


def engines_root(engines_dir: str | Path | None = None) -> Path:
    """--engines-dir, else $EDGEIMG_ENGINES, else ./engines."""
    return Path(engines_dir or os.environ.get(ENV_DIR) or "engines")


def is_current(manifest: dict[str, Any]) -> bool:
    """Keyed by this version's engine key; older engines are stale: never loaded, rebuilt."""
    return (manifest.get("key_inputs") or {}).get("format") == engine_key.KEY_FORMAT


def read_manifest(engine_dir: Path) -> dict[str, Any] | None:
    """The manifest of an engine directory, or None when it has none or it is not JSON."""
    return read_json(engine_dir / MANIFEST)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is absent or not a JSON object."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def file_hashes(engine_dir: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(engine_dir / name) for name in names}


def check(engine_dir: Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with a stored engine: missing or changed files, a key that does not match."""
    manifest = manifest if manifest is not None else read_manifest(engine_dir)
    if manifest is None:
        return ["manifest.json is missing or unreadable"]
    problems = []
    for name, digest in manifest.get("files", {}).items():
        path = engine_dir / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} does not match its sha256")
    if not is_current(manifest):
        problems.append("built before the current engine key: stale, rebuilt on next use")
    elif engine_key.digest(manifest["key_inputs"]) != engine_dir.name:
        problems.append("the manifest does not hash to the directory's key")
    return problems


def usable(engine_dir: Path, verified: bool = True) -> dict[str, Any] | None:
    """A stored engine's manifest if it is intact (and verified, unless `verified` is False)."""
    manifest = read_manifest(engine_dir)
    if manifest is None or check(engine_dir, manifest):
        return None
    if verified and not manifest.get("verification", {}).get("verified"):
        return None
    return manifest


def engine_dirs(root: Path, model: str | None = None) -> Iterator[Path]:
    """Stored engine directories (temporary build directories are skipped)."""
    models = [root / model] if model else sorted(p for p in root.glob("*") if p.is_dir())
    for model_dir in models:
        if model_dir.is_dir():
            yield from sorted(
                p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
            )


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary directory beside `final`, renamed onto it only when the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield temp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
            os.rename(final, old / final.name)
            os.rename(temp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, final)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def write_manifest(engine_dir: Path, manifest: dict[str, Any]) -> None:
    """manifest.json with sorted keys, replaced atomically and durably (it is what makes the
    directory an engine, and a race rewrites it in place)."""
    write_json(engine_dir / MANIFEST, manifest)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """A JSON document with sorted keys, replaced atomically and durably."""
    text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        handle.write(text.encode())


def race_record_path(root: Path, model: str, race_key: str) -> Path:
    """Where the record of a `--precision auto` race with this scope key lives."""
    return root / model / f"race-{race_key}.json"
