"""`build-engine`: export → (calibrate) → compile → verify → store, reusing a cached engine.

The engine's key (engine/key.py) is known before the export, so a cached engine costs no export.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeimg.backends.base import Backend, BackendUnavailable, CompileJob
from edgeimg.engine import calibration, store
from edgeimg.engine.errors import UnknownBackend, VerificationFailed
from edgeimg.engine.export import check_onnx, export_onnx
from edgeimg.engine.key import EngineTarget, engine_target
from edgeimg.engine.network import load_network, sha256_file
from edgeimg.engine.quantize import quantize_qdq
from edgeimg.engine.verify import compare, skipped
from edgeimg.sdk.model import ModelSpec

ONNX_FILE = "model.onnx"
QDQ_FILE = "model.int8.onnx"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: build every backend x precision this device supports and keep the fastest that passes
AUTO = "auto"
#: the registry's backends by name: what callers pass in (engine/ never reads the registry)
Backends = Mapping[str, Backend]


def _quiet(step: str) -> None:
    """The default progress callback: say nothing."""


@dataclass
class BuildResult:
    """What `build-engine --json` prints."""

    model: str
    backend: str
    precision: str
    key: str
    path: Path
    cached: bool
    manifest: dict[str, Any] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "key": self.key,
            "path": str(self.path),
            "cached": self.cached,
            "verification": self.manifest.get("verification", {}),
        }


def named_backend(backends: Backends, name: str) -> Backend:
    """The backend registered as `name`; UnknownBackend naming the ones that are."""
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none installed"
        raise UnknownBackend(f"unknown backend {name!r}; available: {known}")
    return backends[name]


def resolve_backend(backends: Backends, name: str, precision: str) -> Backend:
    """The named backend if it can build `precision` here; for "auto", the best one that can."""
    if name != AUTO:
        backend = named_backend(backends, name)
        backend.require(precision)
        return backend
    reasons = []
    for backend in sorted(backends.values(), key=lambda b: -b.priority):
        if backend.priority < 0:  # runs only when named (triton: another box's engine)
            continue
        reason = backend.missing() or backend.unsupported(precision)
        if reason is None:
            return backend
        reasons.append(f"{backend.name}: {reason}")
    raise BackendUnavailable(f"no backend can build {precision} here ({'; '.join(reasons)})")


def onnx_io(onnx_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Input and output names and shapes (symbolic axes by name) as the ONNX declares them."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def describe(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


@dataclass
class _Exported:
    """The torch network and its checked ONNX export."""

    network: Any
    weights: Path
    onnx_bytes: bytes
    export_diff: float


def _export(target: EngineTarget, say: Callable[[str], None]) -> _Exported:
    say("loading weights and exporting ONNX")
    network, weights = load_network(target.spec)
    onnx_bytes = export_onnx(network, target.impl)
    return _Exported(network, weights, onnx_bytes, check_onnx(onnx_bytes, network, target.impl))


def _build_into(
    target: EngineTarget, export: _Exported, directory: Path, verify: bool, say: Callable
) -> dict[str, Any]:
    """Write ONNX, engine and manifest into `directory`; raises when verification fails."""
    started = time.perf_counter()
    source = directory / ONNX_FILE
    source.write_bytes(export.onnx_bytes)
    if target.precision == "int8":
        say("calibrating INT8 (QDQ)")
        source = quantize_qdq(
            source,
            directory / QDQ_FILE,
            list(target.impl.input_names),
            calibration.calibration_batches(target.impl, list(target.calib), target.max_batch),
            target.backend.symmetric_activations,
        )
    say(f"compiling with {target.backend.name}")
    job = CompileJob(
        target.spec, source, directory, target.precision, target.profiles, export.network
    )
    engine_path = target.backend.compile(job)
    verification = skipped()
    if verify:
        say("verifying against torch FP32")
        verification = _verify(target, export, engine_path)
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    key_inputs = target.key_inputs
    manifest = {
        "model": target.spec.name,
        "model_version": target.spec.version,
        "weights_sha256": sha256_file(export.weights),
        "onnx_sha256": sha256_file(source),
        "onnx_file": source.name,
        "engine_file": engine_path.name,
        "backend": target.backend.name,
        "backend_version": key_inputs["backend_version"],
        "precision": target.precision,
        "device": key_inputs["device"],
        "profiles": key_inputs["profiles"],
        **onnx_io(source),
        "calibration": {
            "source": key_inputs["calibration"],
            "paths": [str(p) for p in target.calib],
            "symmetric_activations": target.backend.symmetric_activations,
        }
        if target.precision == "int8"
        else None,
        "verification": verification,
        "key": target.key,
        "key_inputs": key_inputs,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 3),
        "files": store.file_hashes(directory, names),
    }
    store.write_manifest(directory, manifest)
    return manifest


def _verify(target: EngineTarget, export: _Exported, engine_path: Path) -> dict[str, Any]:
    """verify.compare of the new engine; VerificationFailed when it drifts past tolerance."""
    spec = target.spec
    runner = target.backend.open(engine_path, spec, {"precision": target.precision})
    extra = (
        calibration.calibration_batches(target.impl, list(target.calib), target.max_batch)
        if target.calib
        else ()
    )
    verification = compare(runner, export.network, target.impl, target.max_batch, extra)
    verification["export_max_abs_diff"] = export.export_diff
    if not verification["passed"]:
        raise VerificationFailed(
            f"{spec.name} {target.precision} on {target.backend.name} drifts "
            f"{verification['metric']} by {verification['drift']:.4f} "
            f"(torch FP32 {verification['torch_fp32']:.4f}, engine "
            f"{verification['engine']:.4f}; tolerance {spec.tolerance}); engine refused",
            verification,
        )
    return verification


def build_target(
    target: EngineTarget,
    root: Path,
    force: bool = False,
    verify: bool = True,
    progress: Callable[[str], None] = _quiet,
) -> BuildResult:
    """Build (or reuse) the engine `target` names, in the directory its key names."""
    final = target.directory(root)
    spec, backend = target.spec, target.backend
    manifest = None if force else store.usable(final, verify)
    if manifest is not None:
        return BuildResult(
            spec.name, backend.name, target.precision, target.key, final, True, manifest
        )
    export = _export(target, progress)
    with store.staging(final) as directory:
        manifest = _build_into(target, export, directory, verify, progress)
    return BuildResult(
        spec.name, backend.name, target.precision, target.key, final, False, manifest
    )


def build_engine(
    spec: ModelSpec,
    backends: Backends,
    backend: str = AUTO,
    precision: str = "fp32",
    calib: Sequence[Path] = (),
    max_batch: int = 8,
    engines_dir: str | Path | None = None,
    force: bool = False,
    verify: bool = True,
    progress: Callable[[str], None] = _quiet,
) -> BuildResult:
    """Build (or reuse) the engine for `spec`; see docs/engines.md.

    `backends` is the registry's name → Backend mapping (the caller resolves names once).
    `precision="auto"` races every precision (of `backend`, or of every backend) this device
    supports and keeps the fastest that passes verification, so it cannot skip verification.
    """
    root = store.engines_root(engines_dir)
    if precision == AUTO:
        if not verify:
            raise ValueError("--precision auto needs verification: name a precision to skip it")
        from edgeimg.engine.race import race

        return race(spec, backends, backend, calib, max_batch, root, force, progress)
    chosen = resolve_backend(backends, backend, precision)
    target = engine_target(spec, chosen, precision, max_batch, calib)
    return build_target(target, root, force, verify, progress)
