"""`--precision auto`: build every backend x precision this device supports, verify each against
torch FP32 with the model's accuracy gate, time the ones that pass side by side, keep the fastest.

The race is recorded in the winner's manifest (`race`): every candidate with its speed, metric,
drop and why it was refused or not chosen. A small record beside the engines, named by the race's
own key (model, scope, rule, batch, and every runtime in scope with its version and device),
names the winner's engine key, so the next load opens it without racing, and installing or
upgrading a runtime races again. Losers that passed stay stored as ordinary engines (an explicit
`--backend/--precision` reuses them); refused ones are not stored.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeimg.backends.base import Backend, BackendUnavailable
from edgeimg.engine import calibration, store
from edgeimg.engine.bench import measure
from edgeimg.engine.build import AUTO, Backends, BuildResult, _quiet, build_target, named_backend
from edgeimg.engine.errors import EngineError, VerificationFailed
from edgeimg.engine.key import (
    KEY_FORMAT,
    EngineTarget,
    digest,
    engine_target,
    model_part,
    profiles_document,
)
from edgeimg.engine.network import implementation
from edgeimg.engine.profiles import shape_profiles
from edgeimg.sdk.model import ModelSpec

#: timing budget of the race in seconds, shared by all candidates (interleaved, median)
RACE_SECONDS = 4.0
RACE_ROUNDS = 10
#: a more precise candidate within this factor of the fastest one's time wins: a reduced
#: precision has to buy a clear speedup, not one inside the noise of a busy box
MARGIN = 1.05
PRECISION_RANK = {"fp32": 0, "bf16": 1, "fp16": 1, "int8": 2}
#: stored with each race; a race run under another rule is run again
RULE = "fastest passing; a more precise one within 5% of it wins"


def in_scope(backends: Backends, scope: str) -> list[Backend]:
    """The backends a race in `scope` considers, best-known first: "auto" is every registered
    backend but those with a negative priority (they run only when named: triton's engine is
    another box's); otherwise the one backend named."""
    if scope != AUTO:
        return [named_backend(backends, scope)]
    return sorted((b for b in backends.values() if b.priority >= 0), key=lambda b: -b.priority)


def candidates(
    backends: Backends, scope: str
) -> tuple[list[tuple[Backend, str]], list[dict[str, Any]]]:
    """(backend, precision) pairs buildable here, best-known first, and the others with why.

    On a CPU box this is onnxruntime fp32/int8, openvino fp32/bf16/int8 and torch fp32; on a GPU
    box TensorRT fp32/fp16/int8 and torch CUDA fp16 join in (declared here, measured only where
    they exist).
    """
    wanted, unavailable = [], []
    for backend in in_scope(backends, scope):
        for precision in backend.precisions:
            reason = backend.missing() or backend.unsupported(precision)
            if reason:
                unavailable.append(
                    {
                        "backend": backend.name,
                        "precision": precision,
                        "status": "unavailable",
                        "reason": reason,
                    }
                )
            else:
                wanted.append((backend, precision))
    return wanted, unavailable


def runtime_versions(backends: Backends, scope: str) -> dict[str, str | None]:
    """The versions of the runtimes a race in `scope` considers (None: not installed)."""
    return {backend.name: backend.version() for backend in in_scope(backends, scope)}


def race_key_inputs(
    spec: ModelSpec, backends: Backends, scope: str, max_batch: int
) -> dict[str, Any]:
    """What a race's outcome depends on: the model, the rule, the batch it was timed at, and
    every runtime in scope with its device part (installing or upgrading one races again).
    Calibration is not part of it: a race on the user's DICOM is what `run` and `serve` use."""
    impl = implementation(spec)
    return {
        "format": KEY_FORMAT,
        "race": scope,
        "rule": RULE,
        "model": model_part(spec, impl),
        "profiles": profiles_document(shape_profiles(impl, max_batch)),
        "runtimes": {
            backend.name: {
                "version": backend.version(),
                "device": None if backend.missing() else backend.device_for(spec),
            }
            for backend in in_scope(backends, scope)
        },
    }


def find_raced(
    spec: ModelSpec,
    backends: Backends,
    root: Path,
    scope: str = AUTO,
    max_batch: int = 8,
    calibration: str | None = None,
) -> tuple[Path, dict[str, Any]] | None:
    """The intact, verified engine the race with this scope key chose; None when there is no
    such race (or, with `calibration`, when it calibrated INT8 on other data)."""
    race_key = digest(race_key_inputs(spec, backends, scope, max_batch))
    return _recorded(root, spec.name, race_key, calibration)


def _recorded(
    root: Path, model: str, race_key: str, calibration: str | None
) -> tuple[Path, dict[str, Any]] | None:
    """The engine the record of race `race_key` names, when intact and verified."""
    record = store.read_json(store.race_record_path(root, model, race_key)) or {}
    if not record.get("engine") or (
        calibration is not None and record.get("calibration") != calibration
    ):
        return None
    directory = root / model / str(record["engine"])
    manifest = store.usable(directory)
    return None if manifest is None else (directory, manifest)


def _verdict(verification: dict[str, Any]) -> dict[str, Any]:
    keys = ("metric", "torch_fp32", "engine", "drop", "tolerance", "max_abs_diff")
    return {key: verification.get(key) for key in keys}


def _build_all(
    targets: list[EngineTarget], root: Path, force: bool, say: Callable[[str], None]
) -> tuple[list[BuildResult], list[dict[str, Any]]]:
    """Build and verify each candidate; those refused or failing are entries with the reason."""
    built, refused = [], []
    for target in targets:
        say(f"race: {target.backend.name} {target.precision}")
        entry = {"backend": target.backend.name, "precision": target.precision}
        try:
            built.append(build_target(target, root, force, verify=True))
        except VerificationFailed as error:
            refused.append(
                {**entry, "status": "refused", "reason": str(error), **_verdict(error.verification)}
            )
        except (EngineError, BackendUnavailable) as error:
            refused.append({**entry, "status": "failed", "reason": str(error)})
    return built, refused


def _time(
    spec: ModelSpec, backends: Backends, built: list[BuildResult], batch: int, seconds: float
) -> list[float]:
    """Median milliseconds per batch of each built engine, timed in interleaved rounds."""
    runners = [
        backends[r.backend].open(r.path / r.manifest["engine_file"], spec, r.manifest)
        for r in built
    ]
    arrays = implementation(spec).example_inputs(batch)
    timings = measure(runners, arrays, seconds, RACE_ROUNDS)
    return [statistics.median(times) * 1e3 for times in timings]


def choose(precisions: list[str], speeds: list[float]) -> int:
    """The index of the winner: among the candidates within MARGIN of the fastest, the most
    precise (FP32, then BF16/FP16, then INT8), then the fastest of those."""
    fastest = min(speeds)
    close = [i for i, ms in enumerate(speeds) if ms <= fastest * MARGIN]
    return min(close, key=lambda i: (PRECISION_RANK.get(precisions[i], 3), speeds[i]))


def _reason(chosen: bool, ms: float, chosen_ms: float, fastest: float) -> str:
    if chosen and ms > fastest:
        return f"within {MARGIN:.2f}x of the fastest ({fastest:.3f} ms) and more precise"
    if chosen:
        return "fastest that passed the accuracy gate"
    if ms <= fastest * MARGIN:
        return f"within {MARGIN:.2f}x of the fastest but less precise than the chosen engine"
    return f"passed, {ms / chosen_ms:.2f}x the chosen engine's time"


def _record(directory: Path, manifest: dict[str, Any], race: dict[str, Any]) -> dict[str, Any]:
    """The winner's manifest with the race added, replaced atomically."""
    manifest = {**manifest, "race": race}
    store.write_manifest(directory, manifest)
    return manifest


def race(
    spec: ModelSpec,
    backends: Backends,
    scope: str = AUTO,
    calib: Sequence[Path] = (),
    max_batch: int = 8,
    engines_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] = _quiet,
    seconds: float = RACE_SECONDS,
) -> BuildResult:
    """The fastest engine for `spec` here that passes the accuracy gate (cached per device)."""
    root = store.engines_root(engines_dir)
    fingerprint = calibration.fingerprint([Path(p) for p in calib])
    race_inputs = race_key_inputs(spec, backends, scope, max_batch)
    race_key = digest(race_inputs)
    found = None if force else _recorded(root, spec.name, race_key, fingerprint)
    if found is not None:
        directory, manifest = found
        return BuildResult(
            spec.name,
            manifest["backend"],
            manifest["precision"],
            directory.name,
            directory,
            True,
            manifest,
        )
    wanted, unavailable = candidates(backends, scope)
    targets = [engine_target(spec, b, p, max_batch, calib) for b, p in wanted]
    built, refused = _build_all(targets, root, force, progress)
    if not built:
        reasons = "; ".join(f"{r['backend']} {r['precision']}: {r['reason']}" for r in refused)
        raise EngineError(f"no engine for {spec.name!r} passed verification here ({reasons})")
    progress(f"race: timing {len(built)} engines at batch {max_batch}")
    speeds = _time(spec, backends, built, max_batch, seconds)
    winner = choose([r.precision for r in built], speeds)
    best = speeds[winner]
    entries = []
    for index, (result, ms) in enumerate(zip(built, speeds, strict=True)):
        entries.append(
            {
                "backend": result.backend,
                "precision": result.precision,
                "key": result.key,
                "status": "chosen" if index == winner else "passed",
                "ms_per_batch": round(ms, 3),
                "speedup_vs_chosen": round(best / ms, 3),
                "reason": _reason(index == winner, ms, best, min(speeds)),
                **_verdict(result.manifest.get("verification", {})),
            }
        )
    race_record = {
        "scope": scope,
        "rule": RULE,
        "batch": max_batch,
        "timing": f"median of interleaved runs over {seconds:g} s in {RACE_ROUNDS} rounds",
        "raced_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtime_versions": runtime_versions(backends, scope),
        "chosen": {k: entries[winner][k] for k in ("backend", "precision", "key", "ms_per_batch")},
        "candidates": entries + refused + unavailable,
    }
    result = built[winner]
    manifest = _record(result.path, result.manifest, race_record)
    store.write_json(
        store.race_record_path(root, spec.name, race_key),
        {
            "engine": result.key,
            "calibration": fingerprint,
            "raced_at": race_record["raced_at"],
            "key_inputs": race_inputs,
        },
    )
    return BuildResult(
        spec.name, result.backend, result.precision, result.key, result.path, False, manifest
    )
