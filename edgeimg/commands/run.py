"""`edgeimg run`: a model over files and folders of DICOM, results beside them.

Every input file gets a row in results.jsonl (ok, skipped, duplicate or error), and the rows
and the summary are written on every way out: success, a failed series, or Ctrl-C (what
finished is kept). One series failing never stops the others.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edgeimg.commands.options import CALIB_TO_LOAD, calib_option, triton_option
from edgeimg.commands.precision import precision_option
from edgeimg.commands.source import fetch_inputs, source_options
from edgeimg.commands.weights import use_weights, weights_option
from edgeimg.console import err, out, print_json
from edgeimg.plugins import get_registry
from edgeimg.privacy import scrub
from edgeimg.results import file_rows, finding, write_lines

if TYPE_CHECKING:
    from edgeimg.pipeline import SeriesRun

STATUSES = ("ok", "skipped", "duplicate", "error")
STYLES = {"ok": "green", "skipped": "yellow", "duplicate": "yellow", "error": "red"}
#: exit status after Ctrl-C, as shells report a command ended by SIGINT
INTERRUPTED = 130


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
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    default="results",
    type=click.Path(path_type=Path),
    show_default=True,
    help="Where DICOM outputs and results.jsonl go.",
)
@click.option("--backend", default="auto", show_default=True, help="Engine backend.")
@triton_option
@precision_option()
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
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Slices per engine call (over 8, the engine is built for it).",
)
@click.option(
    "--preview",
    is_flag=True,
    help="Also write previews per series: a PNG per slice, a contact sheet and index.html.",
)
@click.option("--features", is_flag=True, help="Also write per-slice embeddings (.npy + CSV).")
@calib_option(CALIB_TO_LOAD)
@weights_option()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of tables.")
@source_options
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
    calib: tuple[Path, ...],
    weights: Path | None,
    as_json: bool,
    **source: Any,
) -> None:
    """Run model NAME over DICOM files or folders (recursively), or over what --from a PACS
    matches --query; write results to --out."""
    from edgeimg.pipeline import decoder_pool, scan

    started = time.perf_counter()
    pool = decoder_pool(workers) if workers > 0 else None  # its workers start meanwhile
    try:
        use_weights(name, weights)
        spec = get_registry().model(name)
        extras = _extras(spec, preview, features)
        batch_run = _Run(name, out_dir, as_json, started)
        inputs, not_retrieved = fetch_inputs(paths, source, as_json)
        warming = _warm_up(spec)
        found = scan(inputs, spec, pool)
        warming.join()
        batch_run.lines += [*not_retrieved, *found.errors, *found.skipped, *found.duplicates]
        batch_run.lines += [_skipped(job) for job in found.jobs if job.skip is not None]
        accepted = [job for job in found.jobs if job.skip is None]
        if not accepted:
            batch_run.finish(found.describe() + "; nothing to run")
            raise SystemExit(1)
        try:
            engine = batch_run.load(spec, backend, precision, engines_dir, pool, batch, calib)
            batch_run.process(spec, engine, accepted, pool, batch, extras)
        except KeyboardInterrupt:
            batch_run.finish("interrupted: results of the series that finished are kept")
            raise SystemExit(INTERRUPTED) from None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    batch_run.finish()
    if batch_run.failed:
        raise SystemExit(1)


class _Run:
    """One `run`: the lines it has so far, and how to report them on any way out."""

    def __init__(self, name: str, out_dir: Path, as_json: bool, started: float) -> None:
        self.name = name
        self.out_dir = out_dir
        self.as_json = as_json
        self.started = started
        self.lines: list[dict[str, Any]] = []
        self.engine_key: str | None = None
        self.images = 0

    @property
    def failed(self) -> bool:
        return any(line["status"] == "error" for line in self.lines) or self.images == 0

    def load(self, spec, backend, precision, engines_dir, pool, batch, calib) -> Any:
        """The engine, built here when the store has none: sized for `batch`, calibrated on
        `calib` for INT8, its threads sharing the cores with the pool."""
        from edgeimg.backends.threads import sharing_cores
        from edgeimg.engine import EngineError, load_engine
        from edgeimg.engine.profiles import MAX_BATCH

        if not self.as_json:
            err.print(f"loading the {precision} engine for {self.name} ...")
        try:
            with sharing_cores(_engine_threads(pool)):
                engine = load_engine(
                    spec,
                    get_registry().backends,
                    backend=backend,
                    precision=precision,
                    engines_dir=engines_dir,
                    build=True,
                    max_batch=max(batch, MAX_BATCH),  # TensorRT refuses a batch past its profile
                    calib=list(calib),
                )
        except EngineError as error:
            raise click.ClickException(str(error)) from None
        self.engine_key = engine.key
        return engine

    def process(self, spec, engine, jobs, pool, batch, extras) -> None:
        """Infer every accepted series, writing outputs in the pool while the engine goes on."""
        from edgeimg.pipeline import Inferencer, run_series

        inferencer = Inferencer(spec, engine, batch=batch)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        total = sum(len(job.paths) for job in jobs)
        runs: list[tuple[SeriesRun, dict[str, Any]]] = []
        try:
            with _progress(self.as_json or not err.is_terminal) as progress:
                decoding = progress.add_task("decoded", total=total, rate="")
                inferring = progress.add_task("inferred", total=total, rate="")
                writing = progress.add_task("written", total=total, rate="")
                for series in run_series(inferencer, jobs, self.out_dir, pool=pool, extras=extras):
                    self.lines += [_error_line(series.job, error) for error in series.unreadable]
                    progress.advance(decoding, len(series.job.paths))
                    if series.decoded:
                        runs.append((series, _line(series)))
                        self.lines.append(runs[-1][1])
                        self.images += sum(len(item.inputs) for item in series.decoded)
                    progress.advance(inferring, len(series.job.paths))
                    elapsed = time.perf_counter() - self.started
                    progress.update(inferring, rate=f"{self.images / elapsed:.1f} images/s")
                for series, line in runs:
                    _finish(series, line)
                    progress.advance(writing, len(series.job.paths))
        except KeyboardInterrupt:  # keep what finished; forget what did not
            for series, line in runs:
                if series.finished():
                    _finish(series, line)
                else:
                    self.lines.remove(line)
            raise

    def finish(self, note: str | None = None) -> None:
        """Write results.jsonl and the summary (a table, or one JSON document)."""
        seconds = time.perf_counter() - self.started
        rows = [row for line in self.lines for row in file_rows(line)]
        results = write_lines(rows, self.out_dir)[0]
        counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
        if self.as_json:
            print_json(
                {
                    "model": self.name,
                    "engine": self.engine_key,
                    "out": str(self.out_dir),
                    "files": len(rows),
                    "images": self.images,
                    "seconds": round(seconds, 3),
                    "images_per_s": round(self.images / seconds, 2) if seconds else None,
                    "counts": counts,
                    "series": sum(
                        "series_uid" in line and line["status"] == "ok" for line in self.lines
                    ),
                    "results": str(results),
                    "note": note,
                    "failures": [row for row in rows if row["status"] == "error"],
                }
            )
            return
        out.print(_table(self.name, self.lines))
        done = ", ".join(f"{counts[status]} {status}" for status in STATUSES if counts[status])
        out.print(f"{len(rows)} file(s): {done or 'none'}; {self.images} images in {seconds:.1f} s")
        if note:
            out.print(escape(note))
        out.print(f"results in {escape(str(results))}")


def _warm_up(spec: Any) -> threading.Thread:
    """Import the engine code and the model's implementation (torch) in a thread while the
    headers are read in the pool: the main process would otherwise wait for both in turn. A
    failure here is left for loading the engine to report."""

    def imports() -> None:
        with contextlib.suppress(Exception):
            import edgeimg.engine  # noqa: F401

            spec.load()

    thread = threading.Thread(target=imports, name="edgeimg-warm-up", daemon=True)
    thread.start()
    return thread


def _engine_threads(pool: Any) -> int | None:
    """Intra-op threads for the engine: the cores the decoding workers leave it, at least one
    (all of them, spinning, when there is no pool; `edgeimg.backends.threads`)."""
    if pool is None:
        return None
    from edgeimg.backends.base import physical_cores

    return max(1, physical_cores() - pool.workers)


def _table(name: str, lines: list[dict[str, Any]]) -> Table:
    """One row per series that ran (with its finding), one per file passed over or refused."""
    table = Table(title=f"edgeimg run {name}")
    table.add_column("status")
    for column in ("series / file", "finding or reason", "outputs"):
        table.add_column(column, overflow="fold")  # a path cut short hides the file's name
    for line in lines:
        status = line["status"]
        if status == "ok":
            what = f"{line['series_uid']} ({len(line['files'])} files)"
            detail = finding(line.get("results", []))
            outputs = ", ".join(Path(p).name for p in line["outputs"]) or "json"
        else:
            files = line.get("files") or [line.get("file", "")]
            what = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
            detail = line.get("reason") or line.get("error", "")
            outputs = ""
        table.add_row(
            f"[{STYLES[status]}]{status}[/]", escape(str(what)), escape(detail), escape(outputs)
        )
    return table


def _skipped(job: Any) -> dict[str, Any]:
    return {
        "status": "skipped",
        "series_uid": job.series.uid,
        "files": [str(p) for p in job.paths],
        "reason": job.skip,
    }


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


def _line(series: SeriesRun) -> dict[str, Any]:
    """A series' line: its results (outputs recorded once written), or its error in our words."""
    if series.failure is None and series.line is not None:
        return series.line
    doing, error = series.failure or ("running the model", RuntimeError("no result"))
    files = [str(item.path) for item in series.decoded]
    return _series_error(series.job.series.uid, files, error, doing)


def _finish(series: SeriesRun, line: dict[str, Any]) -> None:
    """Wait for a series' outputs; a writer's failure turns its line into an error line."""
    series.finish()
    if series.failure is not None:
        failed = _line(series)
        line.clear()
        line.update(failed)


def _series_error(
    series_uid: str, files: list[str], error: Exception, doing: str
) -> dict[str, Any]:
    from edgeimg.errors import user_message

    message = user_message(error, doing)
    return {"status": "error", "series_uid": series_uid, "files": files, "error": message}
