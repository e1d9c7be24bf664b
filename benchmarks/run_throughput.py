"""Does `edgeimg run` keep decoding and inference overlapped? Full run vs. its two stages alone.

On 500 synthetic 512x512 CT slices (10 series x 50) it measures, in one process:
(a) decoding alone through the worker pool `run` uses, (b) the engine alone on pre-decoded
inputs in batches of 8, and (c) the whole `edgeimg run cnn` command. The pipeline keeps up
when full / min(a, b) >= 0.8 (the goal; #18 is done at 0.5). Stages (a) and (b) are timed warm
(pool started, engine built); (c) is timed as a user sees it, scan and engine loading included,
with the stages' backend and precision, so that it loads the engine they built. Writing the
outputs (the model's chosen writers: SR and JSON per series) is timed alone too (warm): not
part of the ratio, but where the rest of (c) goes; `cpu_split_ms_per_image` gives each stage's
CPU per image.
CPU time per image of each stage gives a ceiling for (c) on this many cores, and so for the
ratio: where it is below the bar, no overlap of the stages can meet it on this machine.
The same command over the study's first series alone splits (c) into what every run pays once
(`startup_s`: pool workers, scanning's hand-offs, the engine's load) and the rate once it runs
(`steady_images_per_s`): two runs, one line through them. Both run in this process, whose
imports and forkserver are already warm; a cold `edgeimg` process pays those on top.
`python -m benchmarks.run_throughput [--weights PATH]`; without shipped cnn weights it measures
freshly initialised ones (the figures do not depend on the weight values at fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edgeimg.device import cpu_model
from edgeimg.engine import load_engine
from edgeimg.pipeline import Decoded, Inferencer, decode_all, decode_file, decoder_pool, scan
from edgeimg.plugins import get_registry
from edgeimg.sdk.model import ModelSpec
from edgeimg.synth.dicom import write_study

MODEL = "cnn"
SERIES, SLICES, SIZE = 10, 50, 512
BATCH = 8
WORKERS = min(2, os.cpu_count() or 1)
BAR = 0.8
DONE = 0.5


def _use_weights(spec: ModelSpec, weights: Path | None, scratch: Path) -> tuple[ModelSpec, str]:
    """Register weights for the model: given ones, shipped ones, or untrained ones as a stand-in."""
    if weights is None:
        shipped = spec.weights_path()
        if shipped is not None and shipped.is_file():
            return spec, f"shipped ({shipped})"
        from safetensors.torch import save_file

        from edgeimg.sdk.training import implementation_for

        weights = scratch / f"{spec.name}-untrained.safetensors"
        save_file(implementation_for(spec).build().state_dict(), str(weights))
        source = "untrained stand-in (no shipped weights yet)"
    else:
        source = f"given ({weights})"
    replaced = dataclasses.replace(spec, weights=str(Path(weights).resolve()))
    get_registry().models[spec.name] = replaced
    return replaced, source


def _dicom_only(folder: Path) -> None:
    """Drop the ground-truth sidecars: `run` would report them as unreadable files."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".dcm":
            path.unlink()


def _rate(images: int, seconds: float, cpu_seconds: float | None = None) -> dict[str, float]:
    rate = {"images": images, "seconds": round(seconds, 3)}
    rate["images_per_s"] = round(images / seconds, 2)
    if cpu_seconds is not None:
        rate["cpu_ms_per_image"] = round(cpu_seconds / images * 1e3, 3)
    return rate


def _decode_cpu(paths: list[Path], spec: ModelSpec) -> float:
    """CPU milliseconds to decode one file in this process: the pool's IPC left out, so a floor."""
    decode_file(paths[0], spec)
    started = time.process_time()
    for path in paths:
        decode_file(path, spec)
    return (time.process_time() - started) / len(paths) * 1e3


def _scan_cpu(folder: Path, spec: ModelSpec) -> float:
    """CPU milliseconds per file to read the headers and group the series in this process."""
    started = time.process_time()
    found = scan([folder], spec)
    return (time.process_time() - started) / found.files * 1e3


def _bound(
    report: dict[str, Any], decode_cpu_ms: float, scan_cpu_ms: float, cores: int
) -> dict[str, Any]:
    """The best full run this CPU allows: every stage's CPU per image, spread over all cores.

    Each figure is a floor (scanning and decoding without IPC, writing and inference as
    measured alone), so the rate is a ceiling; against the slower stage alone it bounds the
    ratio any overlap of the stages can reach on this machine. The scan is in it: the full
    run reads every header before it decodes a file.
    """
    per_image = (
        scan_cpu_ms
        + decode_cpu_ms
        + report["inference"]["cpu_ms_per_image"]
        + report["writing"]["cpu_ms_per_image"]
    )
    ceiling = cores / per_image * 1e3
    slowest = min(report["decoding"]["images_per_s"], report["inference"]["images_per_s"])
    return {
        "cores": cores,
        "scan_cpu_ms_per_image_in_process": round(scan_cpu_ms, 3),
        "decode_cpu_ms_per_image_in_process": round(decode_cpu_ms, 3),
        "cpu_ms_per_image_all_stages": round(per_image, 3),
        "full_images_per_s_ceiling": round(ceiling, 1),
        "ratio_ceiling": round(ceiling / slowest, 3),
        # what all stages together may cost for the full run to reach the bar (#18's 0.5)
        "cpu_ms_per_image_allowed_at_done": round(cores / (DONE * slowest) * 1e3, 3),
    }


def _decode(jobs: list[Any], spec: ModelSpec, workers: int) -> tuple[list[list[Decoded]], dict]:
    """(a): every job's files through a warm pool, as `run` does it; returns the decoded series."""
    pool = decoder_pool(workers)
    try:
        started = time.perf_counter()
        list(decode_all(jobs[0].paths[: 2 * workers], spec, pool))
        warmup = time.perf_counter() - started
        started = time.perf_counter()
        series = [list(decode_all(job.paths, spec, pool)) for job in jobs]
        seconds = time.perf_counter() - started
    finally:
        pool.shutdown()
    failed = [item for items in series for item in items if isinstance(item, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} files failed to decode, first: {failed[0]}")
    images = sum(len(item.inputs) for items in series for item in items)
    return series, {**_rate(images, seconds), "pool_warmup_s": round(warmup, 3)}


def _infer(inferencer: Inferencer, series: list[list[Decoded]]) -> tuple[list[list], dict]:
    """(b): the engine in batches of `inferencer.batch`, postprocessing included, as `run` does."""
    inferencer.infer(series[0][: inferencer.batch])
    started, cpu = time.perf_counter(), time.process_time()
    items = [inferencer.infer(decoded) for decoded in series]
    seconds = time.perf_counter() - started
    return items, _rate(sum(map(len, items)), seconds, time.process_time() - cpu)


def _write(
    inferencer: Inferencer, series: list[list[Decoded]], items: list[list], out_dir: Path
) -> dict[str, float]:
    """Not in the ratio, but it explains it: the DICOM outputs `run` writes after each series.

    Timed warm, as (a) and (b): the first series is written once before, untimed, as a pool
    worker writes its first series once for all it writes after. That first write imports
    highdicom and loads its IOD tables (about half a second of CPU per process, `warmup_s`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    inferencer.write(series[0], items[0], out_dir / "warmup")
    warmup = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    for decoded, results in zip(series, items, strict=True):
        inferencer.write(decoded, results, out_dir)
    seconds = time.perf_counter() - started
    rate = _rate(sum(map(len, items)), seconds, time.process_time() - cpu)
    return {**rate, "warmup_s": round(warmup, 3)}


def _full(
    study: Path, out: Path, engines_dir: Path, engine: Any, workers: int, batch: int
) -> dict[str, Any]:
    """(c): the command itself, in this process so it sees the registered weights.

    It is given the backend and precision the stages used: left to the CLI's default
    (`--precision auto`) it raced and built several engines inside the timed run. It must load
    the engine the stages measured, already built: a different key, or a new engine in the
    store, fails the benchmark rather than timing a build.
    """
    from edgeimg.cli import cli

    backend, precision = engine.manifest["backend"], engine.manifest["precision"]
    args = [MODEL, str(study), "--out", str(out), "--engines-dir", str(engines_dir)]
    args += ["--backend", backend, "--precision", precision]
    args += ["--workers", str(workers), "--batch", str(batch), "--json"]
    stored = _stored_engines(engines_dir)
    started, cpu = time.perf_counter(), time.process_time()
    done = CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)
    wall = time.perf_counter() - started
    main_cpu = time.process_time() - cpu
    if done.exit_code != 0:
        raise RuntimeError(f"edgeimg run {MODEL} failed ({done.exit_code}): {done.output[-2000:]}")
    summary = json.loads(done.stdout)
    built = sorted(_stored_engines(engines_dir) - stored)
    if summary["engine"] != engine.key or built:
        raise RuntimeError(
            f"the full run used engine {summary['engine']} (stages: {engine.key}) and built "
            f"{built or 'none'}: it would time an engine build, not the pipeline"
        )
    images = summary["images"]
    return {
        **_rate(images, summary["seconds"]),
        "wall_s": round(wall, 3),
        # this process only (scan, inference, IPC): the forkserver's workers are not children
        "cpu_ms_per_image_main_process": round(main_cpu / images * 1e3, 3),
    }


def _startup(full: dict[str, Any], first: dict[str, Any], slowest: float) -> dict[str, Any]:
    """(c)'s seconds as a fixed cost plus images at a steady rate, from the whole study and its
    first series run alike: what the ratio would be if nothing were paid once per run."""
    extra_images = full["images"] - first["images"]
    steady = extra_images / (full["seconds"] - first["seconds"])
    fixed = first["seconds"] - first["images"] / steady
    return {
        "first_series": {key: first[key] for key in ("images", "seconds", "images_per_s")},
        "startup_s": round(fixed, 3),
        "startup_share_of_full": round(fixed / full["seconds"], 3),
        "steady_images_per_s": round(steady, 1),
        "ratio_without_startup": round(steady / slowest, 3),
    }


def _stored_engines(engines_dir: Path) -> set[str]:
    """Every engine in the store, as <model>/<key>."""
    return {
        str(path.parent.relative_to(engines_dir)) for path in engines_dir.rglob("manifest.json")
    }


def _device(engine: Any) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "onnxruntime": onnxruntime.__version__,
        "engine": engine.key,
        "engine_device": engine.manifest.get("device"),
    }


def run(
    weights: Path | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    workers: int = WORKERS,
    batch: int = BATCH,
) -> dict[str, Any]:
    """All three measurements on one synthetic study; a JSON-able report."""
    with tempfile.TemporaryDirectory(prefix="edgeimg-throughput-") as scratch_name:
        scratch = Path(scratch_name)
        spec, weights_source = _use_weights(get_registry().model(MODEL), weights, scratch)
        started = time.perf_counter()
        study = write_study(scratch / "study", series=SERIES, slices=SLICES, size=SIZE, seed=0)
        synth_seconds = time.perf_counter() - started
        _dicom_only(study.out_dir)
        engines_dir = scratch / "engines"
        engine = load_engine(
            spec, get_registry().backends, backend, precision, engines_dir=engines_dir, build=True
        )
        jobs = [job for job in scan([study.out_dir], spec).jobs if job.skip is None]
        series, decoding = _decode(jobs, spec, workers)
        inferencer = Inferencer(spec, engine, batch=batch)
        items, inference = _infer(inferencer, series)
        writing = _write(inferencer, series, items, scratch / "written")
        full = _full(study.out_dir, scratch / "out", engines_dir, engine, workers, batch)
        first = _full(
            jobs[0].paths[0].parent, scratch / "first", engines_dir, engine, workers, batch
        )
        decode_cpu_ms = _decode_cpu(jobs[0].paths[:50], spec)
        scan_cpu_ms = _scan_cpu(study.out_dir, spec)
    slowest = min(decoding["images_per_s"], inference["images_per_s"])
    ratio = full["images_per_s"] / slowest
    return {
        "model": MODEL,
        "settings": {
            "series": SERIES,
            "slices": SLICES,
            "size": SIZE,
            "files": study.files,
            "batch": batch,
            "workers": workers,
            "backend": backend,
            "precision": precision,
            "engine_backend": engine.manifest["backend"],
            "engine_precision": engine.manifest["precision"],
            "weights": weights_source,
            "synth_seconds": round(synth_seconds, 2),
        },
        "device": _device(engine),
        "decoding": decoding,
        "inference": inference,
        "writing": writing,
        "full": full,
        "ratio": round(ratio, 3),
        "startup": _startup(full, first, slowest),
        "cpu_split_ms_per_image": {
            "scanning": round(scan_cpu_ms, 3),
            "decoding": round(decode_cpu_ms, 3),
            "inference": inference["cpu_ms_per_image"],
            "writing": writing["cpu_ms_per_image"],
            "full_run_main_process": full["cpu_ms_per_image_main_process"],
        },
        "cpu_bound": _bound(
            {"decoding": decoding, "inference": inference, "writing": writing},
            decode_cpu_ms,
            scan_cpu_ms,
            os.cpu_count() or 1,
        ),
        "bar": BAR,
        "met": ratio >= BAR,
        "done_at": DONE,
        "done": ratio >= DONE,
    }


def table(report: dict[str, Any]) -> str:
    """The figures as a short plain-text table."""
    rows = [("stage", "images", "seconds", "images/s")]
    for stage in ("decoding", "inference", "writing", "full"):
        figures = report[stage]
        rows.append((stage, figures["images"], figures["seconds"], figures["images_per_s"]))
    lines = [f"{a:<10} {b:>7} {c:>9} {d:>9}" for a, b, c, d in rows]
    verdict = "met" if report["met"] else "NOT met"
    done = "done" if report["done"] else "NOT done"
    lines.append(
        f"full / min(decoding, inference) = {report['ratio']:.2f} "
        f"(goal {BAR}: {verdict}; {DONE}: {done})"
    )
    startup = report["startup"]
    lines.append(
        f"full run: {startup['startup_s']} s paid once per run "
        f"({startup['startup_share_of_full']:.0%} of it), then "
        f"{startup['steady_images_per_s']} images/s: a ratio of "
        f"{startup['ratio_without_startup']:.2f} without the start-up"
    )
    bound = report["cpu_bound"]
    lines.append(
        f"CPU per image, all stages: {bound['cpu_ms_per_image_all_stages']} ms on "
        f"{bound['cores']} cores: at most {bound['full_images_per_s_ceiling']} images/s, "
        f"a ratio of at most {bound['ratio_ceiling']:.2f} ({DONE} allows "
        f"{bound['cpu_ms_per_image_allowed_at_done']} ms)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--weights", type=Path, default=None, help="cnn weights (safetensors)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args.weights, args.backend, args.precision, args.workers, args.batch)
    from benchmarks.__main__ import write_result

    print(table(report))
    print(write_result("run_throughput", report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
