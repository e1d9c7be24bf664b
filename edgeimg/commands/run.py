"""`edgeimg run`: a model over files and folders of DICOM, results beside them."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edgeimg.console import err, out, print_json
from edgeimg.plugins import get_registry
from edgeimg.privacy import scrub


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
        disable=disable,
    )


@click.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    default="results",
    type=click.Path(path_type=Path),
    show_default=True,
    help="Where DICOM outputs and results.jsonl go.",
)
@click.option("--backend", default="auto", show_default=True, help="Engine backend.")
@click.option(
    "--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "int8"])
)
@click.option(
    "--engines-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Engine store (default ./engines or $EDGEIMG_ENGINES).",
)
@click.option(
    "--workers",
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    help="Decoding processes (0 decodes in this process).",
)
@click.option("--batch", default=8, show_default=True, help="Slices per engine call.")
@click.option("--preview", is_flag=True, help="Also write a PNG per result for a quick look.")
@click.option("--features", is_flag=True, help="Also write per-slice embeddings (.npy + CSV).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of tables.")
def run(
    name: str,
    paths: tuple[Path, ...],
    out_dir: Path,
    backend: str,
    precision: str,
    engines_dir: Path | None,
    workers: int,
    batch: int,
    preview: bool,
    features: bool,
    as_json: bool,
) -> None:
    """Run model NAME over DICOM files or folders (recursively); write results to --out."""
    from edgeimg.engine import EngineError, load_engine
    from edgeimg.inference import Inferencer, decode_series, decoder_pool, scan

    spec = get_registry().model(name)
    extras = _extras(spec, preview, features)
    started = time.perf_counter()
    found = scan(list(paths), spec)
    try:
        err.print(f"loading the {precision} engine for {name} ...") if not as_json else None
        engine = load_engine(
            name, backend=backend, precision=precision, engines_dir=engines_dir, build=True
        )
    except EngineError as error:
        raise click.ClickException(str(error)) from None
    inferencer = Inferencer(spec, engine, batch=batch)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, Any]] = [*found.errors, *found.skipped]
    accepted = [job for job in found.jobs if job.skip is None]
    for job in found.jobs:
        if job.skip is not None:
            lines.append(
                {
                    "status": "skipped",
                    "series_uid": job.series.uid,
                    "files": [str(p) for p in job.paths],
                    "reason": job.skip,
                }
            )
    total = sum(len(job.paths) for job in accepted)
    pool = decoder_pool(workers) if workers > 0 else None
    images = 0
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            decoding = progress.add_task("decoded", total=total, rate="")
            inferring = progress.add_task("inferred", total=total, rate="")
            writing = progress.add_task("written", total=total, rate="")
            pending: list[tuple[dict[str, Any], Future | None, int]] = []
            for job, items in decode_series(accepted, spec, pool):
                decoded = [item for item in items if not isinstance(item, Exception)]
                for error in (item for item in items if isinstance(item, Exception)):
                    lines.append(_error_line(job, error))
                progress.advance(decoding, len(items))
                if decoded:
                    line, writes = _run_series(inferencer, job, decoded, out_dir, extras, pool)
                    lines.append(line)
                    pending.append((line, writes, len(items)))
                    images += sum(len(item.inputs) for item in decoded)
                progress.advance(inferring, len(items))
                elapsed = time.perf_counter() - started
                progress.update(inferring, rate=f"{images / elapsed:.1f} images/s")
            for line, writes, count in pending:
                _finish_writing(line, writes)
                progress.advance(writing, count)
    finally:
        if pool is not None:
            pool.shutdown()
    seconds = time.perf_counter() - started
    with (out_dir / "results.jsonl").open("a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
    _report(name, engine.key, lines, images, seconds, out_dir, as_json)
    if any(line["status"] == "error" for line in lines):
        raise SystemExit(1)


def _error_line(job: Any, error: Exception) -> dict[str, Any]:
    return {
        "status": "error",
        "series_uid": job.series.uid,
        "file": error.name,
        "error": scrub(error),
    }


def _extras(spec: Any, preview: bool, features: bool) -> list[str]:
    """What to write besides the DICOM outputs; --features needs a model with an embedding."""
    if features:
        from edgeimg.features import supports_features

        if not supports_features(spec):
            raise click.UsageError(f"model {spec.name!r} exposes no embedding for --features")
    return [name for name, wanted in (("preview", preview), ("features", features)) if wanted]


def _run_series(
    inferencer: Any,
    job: Any,
    decoded: list,
    out_dir: Path,
    extras: list[str],
    pool: Executor | None,
) -> tuple[dict[str, Any], Future | None]:
    """One series through the engine; its DICOM outputs are written in the pool while the
    engine goes on (highdicom is pure Python: in this process it would hold up inference).
    A failure becomes an error line."""
    from edgeimg.inference import for_writing, write_outputs

    try:
        result = inferencer.infer_series(job, decoded)
        writes = None
        if pool is None:
            result.line["outputs"] = inferencer.write(decoded, result.items, out_dir)
        else:
            slim = for_writing(decoded)
            writes = pool.submit(write_outputs, inferencer.producer, slim, result.items, out_dir)
        if "preview" in extras:
            from edgeimg.preview import write_previews

            previews = write_previews(inferencer.spec, decoded, result.items, out_dir / "preview")
            result.line["previews"] = [str(path) for path in previews]
        if "features" in extras:
            from edgeimg.features import write_features

            npy, csv_path = write_features(inferencer.spec, decoded, out_dir)
            result.line["features"] = {"npy": str(npy), "index": str(csv_path)}
        return result.line, writes
    except (ValueError, RuntimeError) as error:
        return _series_error(job.series.uid, [str(item.path) for item in decoded], error), None


def _finish_writing(line: dict[str, Any], writes: Future | None) -> None:
    """Wait for a series' outputs; a writer's failure turns its line into an error line."""
    if writes is None:
        return
    try:
        line["outputs"] = writes.result()
    except (ValueError, RuntimeError) as error:
        failed = _series_error(line["series_uid"], line["files"], error)
        line.clear()
        line.update(failed)


def _series_error(series_uid: str, files: list[str], error: Exception) -> dict[str, Any]:
    return {"status": "error", "series_uid": series_uid, "files": files, "error": scrub(error)}


def _report(
    name: str,
    key: str,
    lines: list[dict[str, Any]],
    images: int,
    seconds: float,
    out_dir: Path,
    as_json: bool,
) -> None:
    counts = {
        status: sum(line["status"] == status for line in lines)
        for status in ("ok", "skipped", "error")
    }
    if as_json:
        print_json(
            {
                "model": name,
                "engine": key,
                "out": str(out_dir),
                "images": images,
                "seconds": round(seconds, 3),
                "images_per_s": round(images / seconds, 2) if seconds else None,
                "counts": counts,
                "results": str(out_dir / "results.jsonl"),
                "failures": [line for line in lines if line["status"] == "error"],
            }
        )
        return
    table = Table(title=f"edgeimg run {name}")
    for column in ("status", "series / file", "result"):
        table.add_column(column)
    for line in lines:
        what = line.get("series_uid") or line.get("file", "")
        if line["status"] == "ok":
            detail = ", ".join(Path(p).name for p in line["outputs"]) or "json"
        else:
            detail = line.get("reason") or line.get("error", "")
        style = {"ok": "green", "skipped": "yellow", "error": "red"}[line["status"]]
        table.add_row(f"[{style}]{line['status']}[/]", escape(str(what)), escape(detail))
    out.print(table)
    out.print(f"{images} images in {seconds:.1f} s; results in {out_dir / 'results.jsonl'}")
