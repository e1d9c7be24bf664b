"""`load_engine`: the engine `run` and `serve` use, valid for this model, device and runtime.

A lookup computes the engine's key (no export) and opens the directory it names when that
directory's manifest and files check out; nothing else in the store is looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.backends.base import Backend, Runner
from edgeimg.engine import store
from edgeimg.engine.build import AUTO, Backends, build_target, resolve_backend
from edgeimg.engine.errors import EngineNotFound
from edgeimg.engine.key import engine_target
from edgeimg.sdk.model import ModelSpec


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


def find_engine(
    spec: ModelSpec,
    backend: Backend,
    precision: str,
    root: Path,
    max_batch: int = 8,
    calib: Sequence[Path] = (),
) -> tuple[Path, dict[str, Any]] | None:
    """The intact, verified engine in the directory its key names; None when there is none."""
    directory = engine_target(spec, backend, precision, max_batch, calib).directory(root)
    manifest = store.usable(directory)
    return None if manifest is None else (directory, manifest)


def open_engine(
    directory: Path, manifest: dict[str, Any], spec: ModelSpec, backend: Backend
) -> Engine:
    """Open a stored engine with the backend that built it."""
    runner = backend.open(directory / manifest["engine_file"], spec, manifest)
    return Engine(directory.name, directory, manifest, runner)


def load_engine(
    spec: ModelSpec,
    backends: Backends,
    backend: str = AUTO,
    precision: str = "fp32",
    engines_dir: str | Path | None = None,
    build: bool = False,
    max_batch: int = 8,
    calib: Sequence[Path] = (),
) -> Engine:
    """A valid, verified engine for `spec` on this device; builds one when `build`.

    `backends` is the registry's name → Backend mapping. `precision="auto"` takes the winner of
    the last `--precision auto` race here at `max_batch` (and runs the race when there is none
    and `build` is set), whatever data that race calibrated INT8 on; an explicit "int8" is the
    engine calibrated on `calib` (synthetic data when empty).
    """
    root = store.engines_root(engines_dir)
    if precision == AUTO:
        return _load_raced(spec, backends, backend, root, build, max_batch, engines_dir)
    chosen = resolve_backend(backends, backend, precision)
    target = engine_target(spec, chosen, precision, max_batch, calib)
    directory = target.directory(root)
    manifest = store.usable(directory)
    if manifest is None and build:
        manifest = build_target(target, root).manifest
    if manifest is None:
        raise EngineNotFound(
            f"no verified {precision} {chosen.name} engine for {spec.name!r} on this device in "
            f"{root}; build one: edgeimg build-engine {spec.name} --backend {chosen.name} "
            f"--precision {precision}" + _options(max_batch, engines_dir)
        )
    return open_engine(directory, manifest, spec, chosen)


def _options(max_batch: int, engines_dir: str | Path | None) -> str:
    """The build-engine options that name the same engine store and shape profile."""
    return (f" --max-batch {max_batch}" if max_batch != 8 else "") + (
        f" --engines-dir {engines_dir}" if engines_dir else ""
    )


def _load_raced(
    spec: ModelSpec,
    backends: Backends,
    scope: str,
    root: Path,
    build: bool,
    max_batch: int,
    engines_dir: str | Path | None,
) -> Engine:
    from edgeimg.engine.race import find_raced, race

    found = find_raced(spec, backends, root, scope, max_batch)
    if found is None and build:
        result = race(spec, backends, scope, max_batch=max_batch, engines_dir=root)
        found = result.path, result.manifest
    if found is None:
        named = "" if scope == AUTO else f" --backend {scope}"
        raise EngineNotFound(
            f"no engine from a --precision auto race for {spec.name!r} on this device in {root}; "
            f"build one: edgeimg build-engine {spec.name}{named}" + _options(max_batch, engines_dir)
        )
    directory, manifest = found
    return open_engine(directory, manifest, spec, backends[manifest["backend"]])
