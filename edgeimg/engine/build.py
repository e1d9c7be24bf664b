"""`build-engine`: export → (calibrate) → compile → verify → store, reusing a cached engine."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeimg.backends.base import Backend, BackendUnavailable, CompileJob
from edgeimg.engine import calibration, store
from edgeimg.engine.errors import VerificationFailed
from edgeimg.engine.export import check_onnx, export_onnx
from edgeimg.engine.network import implementation, load_network, sha256_file
from edgeimg.engine.profiles import shape_profiles
from edgeimg.engine.quantize import quantize_qdq
from edgeimg.engine.verify import compare, skipped
from edgeimg.plugins import get_registry

ONNX_FILE = "model.onnx"
QDQ_FILE = "model.int8.onnx"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: build every backend x precision this device supports and keep the fastest that passes
AUTO = "auto"


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


def resolve_backend(name: str, precision: str) -> Backend:
    """The named backend if it can build `precision` here; for "auto", the best one that can."""
    backends = get_registry().backends
    if name != "auto":
        backend = get_registry().backend(name)
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


def _usable(engine_dir: Path, verify: bool) -> dict[str, Any] | None:
    """A stored engine's manifest if it is intact (and verified, when verification is wanted)."""
    manifest = store.read_manifest(engine_dir)
    if manifest is None or store.check(engine_dir, manifest):
        return None
    if verify and not manifest.get("verification", {}).get("verified"):
        return None
    return manifest


@dataclass
class _Plan:
    spec: Any
    impl: Any
    backend: Backend
    precision: str
    network: Any
    weights: Path
    onnx_bytes: bytes
    profiles: Any
    device: dict[str, Any]
    calib: list[Path]
    calibration: str | None
    max_batch: int
    export_diff: float

    def key(self) -> str:
        return store.cache_key(
            hashlib.sha256(self.onnx_bytes).hexdigest(),
            self.backend.name,
            self.backend.version(),
            self.precision,
            self.profiles,
            self.device,
            self.calibration,
        )


def _build_into(plan: _Plan, directory: Path, verify: bool, say: Callable[[str], None]) -> dict:
    """Write ONNX, engine and manifest into `directory`; raises when verification fails."""
    started = time.perf_counter()
    source = directory / ONNX_FILE
    source.write_bytes(plan.onnx_bytes)
    if plan.precision == "int8":
        say("calibrating INT8 (QDQ)")
        batches = calibration.calibration_batches(plan.impl, plan.calib, plan.max_batch)
        source = quantize_qdq(
            source,
            directory / QDQ_FILE,
            list(plan.impl.input_names),
            batches,
            plan.backend.symmetric_activations,
        )
    say(f"compiling with {plan.backend.name}")
    job = CompileJob(plan.spec, source, directory, plan.precision, plan.profiles, plan.network)
    engine_path = plan.backend.compile(job)
    verification = skipped()
    if verify:
        say("verifying against torch FP32")
        runner = plan.backend.open(engine_path, plan.spec, {"precision": plan.precision})
        extra = (
            calibration.calibration_batches(plan.impl, plan.calib, plan.max_batch)
            if plan.calib
            else ()
        )
        verification = compare(runner, plan.network, plan.impl, plan.max_batch, extra)
        verification["export_max_abs_diff"] = plan.export_diff
        if not verification["passed"]:
            raise VerificationFailed(
                f"{plan.spec.name} {plan.precision} on {plan.backend.name} drifts "
                f"{verification['metric']} by {verification['drift']:.4f} "
                f"(torch FP32 {verification['torch_fp32']:.4f}, engine "
                f"{verification['engine']:.4f}; tolerance {plan.spec.tolerance}); engine refused",
                verification,
            )
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    manifest = {
        "model": plan.spec.name,
        "model_version": plan.spec.version,
        "weights_sha256": sha256_file(plan.weights),
        "onnx_sha256": sha256_file(source),
        "onnx_file": source.name,
        "engine_file": engine_path.name,
        "backend": plan.backend.name,
        "backend_version": plan.backend.version(),
        "precision": plan.precision,
        "device": plan.device,
        "profiles": {n: [list(s) for s in shapes] for n, shapes in plan.profiles.items()},
        **onnx_io(source),
        "calibration": {
            "source": plan.calibration,
            "paths": [str(p) for p in plan.calib],
            "symmetric_activations": plan.backend.symmetric_activations,
        }
        if plan.precision == "int8"
        else None,
        "verification": verification,
        "key_inputs": {
            "onnx_sha256": hashlib.sha256(plan.onnx_bytes).hexdigest(),
            "calibration": plan.calibration,
        },
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 3),
        "files": store.file_hashes(directory, names),
    }
    manifest["key"] = store.key_of(manifest)
    store.write_manifest(directory, manifest)
    return manifest


def build_engine(
    name: str,
    backend: str = "auto",
    precision: str = "fp32",
    calib: list[Path] | tuple[Path, ...] = (),
    max_batch: int = 8,
    engines_dir: str | Path | None = None,
    force: bool = False,
    verify: bool = True,
    progress: Callable[[str], None] = _quiet,
) -> BuildResult:
    """Build (or reuse) the engine for model `name`; see docs/engines.md.

    `precision="auto"` races every precision (of `backend`, or of every backend) this device
    supports and keeps the fastest that passes verification, so it cannot skip verification.
    """
    if precision == AUTO:
        if not verify:
            raise ValueError("--precision auto needs verification: name a precision to skip it")
        from edgeimg.engine.race import race

        return race(name, backend, calib, max_batch, engines_dir, force, progress)
    spec = get_registry().model(name)
    chosen = resolve_backend(backend, precision)
    impl = implementation(spec)
    progress("loading weights and exporting ONNX")
    network, weights = load_network(spec)
    onnx_bytes = export_onnx(network, impl)
    export_diff = check_onnx(onnx_bytes, network, impl)
    calib_paths = [Path(p) for p in calib]
    plan = _Plan(
        spec,
        impl,
        chosen,
        precision,
        network,
        weights,
        onnx_bytes,
        shape_profiles(impl, max_batch),
        chosen.device_for(spec),
        calib_paths,
        calibration.fingerprint(calib_paths) if precision == "int8" else None,
        max_batch,
        export_diff,
    )
    key = plan.key()
    final = store.engines_root(engines_dir) / spec.name / key
    manifest = None if force else _usable(final, verify)
    if manifest is not None:
        return BuildResult(spec.name, chosen.name, precision, key, final, True, manifest)
    with store.staging(final) as directory:
        manifest = _build_into(plan, directory, verify, progress)
    return BuildResult(spec.name, chosen.name, precision, key, final, False, manifest)
