"""`--precision auto`: build every backend x precision this device supports, verify each against
torch FP32 with the model's accuracy gate, time the ones that pass side by side, keep the fastest.

The race is recorded in the winner's manifest (`race`): every candidate with its speed, metric,
drop and why it was refused or not chosen, and the runtime versions it was run under, so that
installing or upgrading a runtime runs the race again. Losers that passed stay stored as ordinary
engines (an explicit `--backend/--precision` reuses them); refused ones are not stored.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeimg.backends.base import Backend, BackendUnavailable
from edgeimg.engine import store
from edgeimg.engine.bench import measure
from edgeimg.engine.build import AUTO, BuildResult, _quiet, build_engine
from edgeimg.engine.errors import EngineError, VerificationFailed
from edgeimg.engine.load import matches
from edgeimg.engine.network import implementation
from edgeimg.plugins import get_registry

#: timing budget of the race in seconds, shared by all candidates (interleaved, median)
RACE_SECONDS = 4.0
RACE_ROUNDS = 10
#: a more precise candidate within this factor of the fastest one's time wins: a reduced
#: precision has to buy a clear speedup, not one inside the noise of a busy box
MARGIN = 1.05
PRECISION_RANK = {"fp32": 0, "bf16": 1, "fp16": 1, "int8": 2}
#: stored with each race; a race run under another rule is run again
RULE = "fastest passing; a more precise one within 5% of it wins"


def candidates(scope: str) -> tuple[list[tuple[Backend, str]], list[dict[str, Any]]]:
    """(backend, precision) pairs buildable here, best-known first, and the others with why.

    `scope` is "auto" (every registered backend but those with a negative priority, which run
    only when named: triton's engine is another box's) or one backend's name. On a CPU box this is
    onnxruntime fp32/int8, openvino fp32/bf16/int8 and torch fp32; on a GPU box TensorRT
    fp32/fp16/int8 and torch CUDA fp16 join in (declared here, measured only where they exist).
    """
    registry = get_registry()
    backends = (
        sorted(
            (b for b in registry.backends.values() if b.priority >= 0), key=lambda b: -b.priority
        )
        if scope == AUTO
        else [registry.backend(scope)]
    )
    wanted, unavailable = [], []
    for backend in backends:
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


def runtime_versions(scope: str) -> dict[str, str | None]:
    """The versions of the runtimes a race in `scope` considered (None: not installed)."""
    registry = get_registry()
    names = sorted(registry.backends) if scope == AUTO else [scope]
    return {name: registry.backend(name).version() for name in names}


def find_raced(
    spec: Any, root: Path, scope: str = AUTO, max_batch: int | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact, verified race winner for this model, device and set of runtimes."""
    registry = get_registry()
    versions = runtime_versions(scope)
    found = []
    for directory in store.engine_dirs(root, spec.name):
        manifest = store.read_manifest(directory) or {}
        race = manifest.get("race") or {}
        if (
            race.get("scope") != scope
            or race.get("rule") != RULE
            or race.get("runtime_versions") != versions
            or (max_batch is not None and race.get("batch") != max_batch)
            or manifest.get("backend") not in registry.backends
        ):
            continue
        backend = registry.backend(manifest["backend"])
        if not matches(
            manifest, spec, backend, manifest.get("precision"), backend.device_for(spec)
        ):
            continue
        if manifest.get("verification", {}).get("verified") and not store.check(directory):
            found.append((race.get("raced_at", ""), directory, manifest))
    if not found:
        return None
    _, directory, manifest = max(found, key=lambda item: item[0])
    return directory, manifest


def _verdict(verification: dict[str, Any]) -> dict[str, Any]:
    keys = ("metric", "torch_fp32", "engine", "drop", "tolerance", "max_abs_diff")
    return {key: verification.get(key) for key in keys}


def _build_all(
    name: str,
    wanted: list[tuple[Backend, str]],
    options: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[list[BuildResult], list[dict[str, Any]]]:
    """Build and verify each candidate; those refused or failing are entries with the reason."""
    built, refused = [], []
    for backend, precision in wanted:
        say(f"race: {backend.name} {precision}")
        entry = {"backend": backend.name, "precision": precision}
        try:
            built.append(build_engine(name, backend.name, precision, **options, verify=True))
        except VerificationFailed as error:
            refused.append(
                {**entry, "status": "refused", "reason": str(error), **_verdict(error.verification)}
            )
        except (EngineError, BackendUnavailable) as error:
            refused.append({**entry, "status": "failed", "reason": str(error)})
    return built, refused


def _time(spec: Any, built: list[BuildResult], batch: int, seconds: float) -> list[float]:
    """Median milliseconds per batch of each built engine, timed in interleaved rounds."""
    registry = get_registry()
    runners = [
        registry.backend(r.backend).open(r.path / r.manifest["engine_file"], spec, r.manifest)
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
    name: str,
    backend: str = AUTO,
    calib: list[Path] | tuple[Path, ...] = (),
    max_batch: int = 8,
    engines_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] = _quiet,
    seconds: float = RACE_SECONDS,
) -> BuildResult:
    """The fastest engine for `name` here that passes the accuracy gate (cached per device)."""
    spec = get_registry().model(name)
    root = store.engines_root(engines_dir)
    found = None if force else find_raced(spec, root, backend, max_batch)
    if found is not None:
        directory, manifest = found
        return BuildResult(
            name,
            manifest["backend"],
            manifest["precision"],
            directory.name,
            directory,
            True,
            manifest,
        )
    wanted, unavailable = candidates(backend)
    options = {"calib": calib, "max_batch": max_batch, "engines_dir": root, "force": force}
    built, refused = _build_all(name, wanted, options, progress)
    if not built:
        reasons = "; ".join(f"{r['backend']} {r['precision']}: {r['reason']}" for r in refused)
        raise EngineError(f"no engine for {name!r} passed verification here ({reasons})")
    progress(f"race: timing {len(built)} engines at batch {max_batch}")
    speeds = _time(spec, built, max_batch, seconds)
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
        "scope": backend,
        "rule": RULE,
        "batch": max_batch,
        "timing": f"median of interleaved runs over {seconds:g} s in {RACE_ROUNDS} rounds",
        "raced_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtime_versions": runtime_versions(backend),
        "chosen": {k: entries[winner][k] for k in ("backend", "precision", "key", "ms_per_batch")},
        "candidates": entries + refused + unavailable,
    }
    result = built[winner]
    manifest = _record(result.path, result.manifest, race_record)
    return BuildResult(
        name, result.backend, result.precision, result.key, result.path, False, manifest
    )
