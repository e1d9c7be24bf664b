"""`load_engine`: the engine `run` and `serve` use, valid for this model, device and runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.backends.base import Backend, Runner
from edgeimg.engine import store
from edgeimg.engine.build import AUTO, build_engine, resolve_backend
from edgeimg.engine.errors import EngineNotFound
from edgeimg.engine.network import sha256_file
from edgeimg.plugins import get_registry


@dataclass
class Engine:
    """An opened engine: `run(*arrays)` in the ONNX input order, outputs as a tuple."""

    key: str
    path: Path
    manifest: dict[str, Any]
    runner: Runner = field(repr=False)

    @property
    def input_names(self) -> list[str]:
        return [item["name"] for item in self.manifest["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [item["name"] for item in self.manifest["outputs"]]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.runner.run(*arrays))


def matches(
    manifest: dict[str, Any], spec: Any, backend: Backend, precision: str, device: dict[str, Any]
) -> bool:
    """Built for this model version and weights, this backend version, precision and device."""
    weights = spec.weights_path()
    return (
        manifest.get("model") == spec.name
        and manifest.get("model_version") == spec.version
        and manifest.get("backend") == backend.name
        and manifest.get("backend_version") == backend.version()
        and manifest.get("precision") == precision
        and manifest.get("device") == device
        and weights is not None
        and weights.is_file()
        and manifest.get("weights_sha256") == sha256_file(weights)
    )


def find_engine(
    spec: Any, backend: Backend, precision: str, root: Path
) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact, verified engine that matches; None when there is none."""
    found = []
    device = backend.device_for(spec)
    for directory in store.engine_dirs(root, spec.name):
        manifest = store.read_manifest(directory)
        if manifest is None or not matches(manifest, spec, backend, precision, device):
            continue
        if manifest.get("verification", {}).get("verified") and not store.check(
            directory, manifest
        ):
            found.append((manifest.get("built_at", ""), directory, manifest))
    if not found:
        return None
    _, directory, manifest = max(found, key=lambda item: item[0])
    return directory, manifest


def open_engine(directory: Path, manifest: dict[str, Any]) -> Engine:
    """Open a stored engine with the backend that built it."""
    spec = get_registry().model(manifest["model"])
    backend = get_registry().backend(manifest["backend"])
    runner = backend.open(directory / manifest["engine_file"], spec, manifest)
    return Engine(directory.name, directory, manifest, runner)


def load_engine(
    name: str,
    backend: str = "auto",
    precision: str = "fp32",
    engines_dir: str | Path | None = None,
    build: bool = False,
) -> Engine:
    """A valid, verified engine for model `name` on this device; builds one when `build`.

    `precision="auto"` takes the winner of the last `--precision auto` race here (and runs the
    race when there is none and `build` is set).
    """
    spec = get_registry().model(name)
    root = store.engines_root(engines_dir)
    if precision == AUTO:
        return _load_raced(spec, backend, root, build, engines_dir is not None)
    chosen = resolve_backend(backend, precision)
    found = find_engine(spec, chosen, precision, root)
    if found is None and build:
        result = build_engine(name, chosen.name, precision, engines_dir=root)
        found = result.path, result.manifest
    if found is None:
        raise EngineNotFound(
            f"no verified {precision} {chosen.name} engine for {name!r} on this device in "
            f"{root}; build one: edgeimg build-engine {name} --backend {chosen.name} "
            f"--precision {precision}" + (f" --engines-dir {root}" if engines_dir else "")
        )
    return open_engine(*found)


def _load_raced(spec: Any, backend: str, root: Path, build: bool, named_root: bool) -> Engine:
    from edgeimg.engine.race import find_raced, race

    found = find_raced(spec, root, backend)
    if found is None and build:
        result = race(spec.name, backend, engines_dir=root)
        found = result.path, result.manifest
    if found is None:
        scope = "" if backend == AUTO else f" --backend {backend}"
        raise EngineNotFound(
            f"no engine from a --precision auto race for {spec.name!r} on this device in {root}; "
            f"build one: edgeimg build-engine {spec.name}{scope}"
            + (f" --engines-dir {root}" if named_root else "")
        )
    return open_engine(*found)
