"""The engine store: `engines/<model>/<key>/` holding the engine, its ONNX and manifest.json.

The key hashes everything an engine's validity depends on, so a lookup is a directory name and
any change (weights, precision, runtime version, device) lands in a new directory. Directories
appear whole or not at all: they are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeimg.durable import atomic_file
from edgeimg.engine.network import sha256_file

MANIFEST = "manifest.json"
ENV_DIR = "EDGEIMG_ENGINES"
KEY_LENGTH = 16


def engines_root(engines_dir: str | Path | None = None) -> Path:
    """--engines-dir, else $EDGEIMG_ENGINES, else ./engines."""
    return Path(engines_dir or os.environ.get(ENV_DIR) or "engines")


def cache_key(
    onnx_sha256: str,
    backend: str,
    backend_version: str | None,
    precision: str,
    profiles: dict[str, Any],
    device: dict[str, Any],
    calibration: str | None = None,
) -> str:
    """A short stable hash of what makes an engine valid (and, for INT8, its calibration)."""
    document = {
        "onnx": onnx_sha256,
        "backend": backend,
        "backend_version": backend_version,
        "precision": precision,
        "profiles": {name: [list(s) for s in shapes] for name, shapes in profiles.items()},
        "device": device,
        "calibration": calibration if precision == "int8" else None,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def key_of(manifest: dict[str, Any]) -> str:
    """The key a manifest's own fields hash to (a renamed or edited directory will not match)."""
    return cache_key(
        manifest["key_inputs"]["onnx_sha256"],
        manifest["backend"],
        manifest["backend_version"],
        manifest["precision"],
        manifest["profiles"],
        manifest["device"],
        manifest["key_inputs"].get("calibration"),
    )


def read_manifest(engine_dir: Path) -> dict[str, Any] | None:
    """The manifest of an engine directory, or None when it has none or it is not JSON."""
    try:
        return json.loads((engine_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


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
    try:
        if key_of(manifest) != engine_dir.name:
            problems.append("the manifest does not hash to the directory's key")
    except (KeyError, TypeError):
        problems.append("the manifest lacks key fields")
    return problems


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
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_file(engine_dir / MANIFEST) as handle:
        handle.write(text.encode())
