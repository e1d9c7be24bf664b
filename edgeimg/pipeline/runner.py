"""The series runner that `run` and `serve` share: decoded series in, results and outputs out.

`run_series` decodes each series (ahead, in the worker pool when there is one), infers, and
hands the results to the writers the model's spec chose (`edgeimg.writers`), so `run` and
`serve` write the same things. With a pool, the outputs are written there while the engine goes
on (highdicom is pure Python: in this process it would hold up inference); `SeriesRun.finish`
waits for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from edgeimg.dicom.frames import is_multiframe
from edgeimg.dicom.read import DicomInputError
from edgeimg.pipeline.decode import Decoded, decode_series
from edgeimg.pipeline.headers import SeriesJob
from edgeimg.sdk.model import ModelSpec
from edgeimg.writers import Frame, SeriesOutput, Writer, Written, choose, write_series
from edgeimg.writers.items import typed_all


@dataclass(frozen=True)
class Producer:
    """Who made a result and which writers record it; small enough to send to a worker process."""

    spec: ModelSpec
    engine_key: str
    writers: tuple[Writer, ...] = ()
    predecessors: tuple[Dataset, ...] = ()  # earlier SRs a revised result supersedes
    other_evidence: tuple[Dataset, ...] = ()  # prior studies the model compared with


@dataclass
class SeriesResult:
    """Everything one series produced, as a results.jsonl line."""

    line: dict[str, Any]
    decoded: list[Decoded]
    items: list[dict[str, Any]]


class Inferencer:
    """Runs an engine over decoded slices or series; its writers are chosen once, here."""

    def __init__(self, spec: ModelSpec, engine: Any, batch: int = 8) -> None:
        from edgeimg.plugins import get_registry

        self.spec = spec
        self.engine = engine
        self.batch = batch
        self.producer = Producer(spec, engine.key, choose(spec, get_registry()))
        self.implementation = spec.load()(spec)

    def infer(self, decoded: list[Decoded]) -> list[dict[str, Any]]:
        """Per-slice results (or one per series for sequence models)."""
        stacked = np.concatenate([item.inputs for item in decoded]).astype(np.float32, copy=False)
        if self.spec.input.sequence:
            return self.implementation.postprocess(self.engine.run(stacked[None]))
        items: list[dict[str, Any]] = []
        for start in range(0, len(stacked), self.batch):
            outputs = self.engine.run(stacked[start : start + self.batch])
            items.extend(self.implementation.postprocess(outputs))
        return items

    def write(self, decoded: list[Decoded], items: list[dict[str, Any]], out_dir: Path) -> Written:
        """Write the outputs of one series here and now."""
        return write_outputs(self.producer, decoded, items, out_dir)

    def infer_series(self, job: SeriesJob, decoded: list[Decoded]) -> SeriesResult:
        """Infer one series; its line has no outputs yet (`write_outputs` makes them)."""
        started = time.perf_counter()
        items = self.infer(decoded)
        line = {
            "status": "ok",
            "model": self.spec.name,
            "model_version": self.spec.version,
            "engine": self.engine.key,
            "study_uid": job.series.study_uid,
            "series_uid": job.series.uid,
            "files": [str(item.path) for item in decoded],
            "sop_instance_uids": [item.sop_instance_uid for item in decoded],
            "frames": [len(item.inputs) for item in decoded],
            "results": [summarize(item) for item in items],
            "outputs": [],
            "issues": list(job.series.issues),
            "complete": job.series.complete,
            "seconds": round(time.perf_counter() - started, 4),
        }
        return SeriesResult(line, decoded, items)


@dataclass
class SeriesRun:
    """One series through the runner. `line` is its results.jsonl line (None when no file
    decoded); `unreadable` the files that did not decode; `failure` what went wrong (doing
    what, and the error) when the series failed, in which case `line` is not to be used."""

    job: SeriesJob
    decoded: list[Decoded] = field(default_factory=list)
    unreadable: list[DicomInputError] = field(default_factory=list)
    result: SeriesResult | None = None
    failure: tuple[str, Exception] | None = None
    writing: Future | None = None
    written: Written | None = None

    @property
    def line(self) -> dict[str, Any] | None:
        return self.result.line if self.result is not None else None

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.result.items if self.result is not None else []

    def finish(self) -> Written | None:
        """Wait for outputs still being written in the pool and record them in the line; a
        writer's failure becomes the series' failure."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            try:
                self.record(writing.result())
            except Exception as error:  # the writers' own errors are already in our words
                self.failure = ("writing the outputs", error)
        return self.written

    def raise_failure(self) -> None:
        """Raise what the series failed with, if it did (`serve` fails the whole job then)."""
        self.finish()
        if self.failure is not None:
            raise self.failure[1]

    def finished(self) -> bool:
        """Whether its outputs are written (or were never to be): what Ctrl-C keeps."""
        writing = self.writing
        return writing is None or (writing.done() and writing.exception() is None)

    def record(self, written: Written) -> None:
        """What the writers wrote, in the line: DICOM objects are the outputs; other files a
        writer made are listed apart (they are not forwarded anywhere)."""
        self.written = written
        assert self.result is not None
        self.result.line["outputs"] = written.objects
        if written.files:
            self.result.line["written_files"] = written.files


def run_series(
    inferencer: Inferencer,
    jobs: Sequence[SeriesJob],
    out_dir: Path | None,
    *,
    pool: Executor | None = None,
    producer: Producer | None = None,
    extras: Sequence[str] = (),
    whole: bool = False,
) -> Iterator[SeriesRun]:
    """Each series decoded (all queued up front), inferred and handed to the writers into
    `out_dir` (None: results only, nothing written). A failing series is reported in its
    `SeriesRun` and the others go on. `whole`: a series with a file that does not decode
    fails instead of running on the rest. `extras` names what else to write ("preview",
    "features")."""
    producer = producer or inferencer.producer
    for job, items in decode_series(jobs, inferencer.spec, pool):
        run = SeriesRun(job)
        for item in items:
            (run.unreadable if isinstance(item, DicomInputError) else run.decoded).append(item)
        if whole and run.unreadable:
            run.failure = ("decoding", run.unreadable[0])
        elif run.decoded:
            try:
                _infer_and_write(run, inferencer, producer, out_dir, pool, extras)
            except Exception as error:  # one series must not end the others
                run.failure = ("running the model", error)
        yield run


def _infer_and_write(
    run: SeriesRun,
    inferencer: Inferencer,
    producer: Producer,
    out_dir: Path | None,
    pool: Executor | None,
    extras: Sequence[str],
) -> None:
    run.result = result = inferencer.infer_series(run.job, run.decoded)
    if out_dir is None:
        return
    if pool is None:
        run.record(write_outputs(producer, run.decoded, result.items, out_dir))
    else:
        slim = for_writing(run.decoded)
        run.writing = pool.submit(write_outputs, producer, slim, result.items, out_dir)
    if "preview" in extras:
        from edgeimg.preview import write_previews

        previews = write_previews(inferencer.spec, run.decoded, result.items, out_dir / "preview")
        result.line["previews"] = [str(path) for path in previews]
    if "features" in extras:
        from edgeimg.features import write_features

        npy, csv_path = write_features(inferencer.spec, run.decoded, out_dir)
        result.line["features"] = {"npy": str(npy), "index": str(csv_path)}


def write_outputs(
    producer: Producer, decoded: list[Decoded], items: list[dict[str, Any]], out_dir: Path
) -> Written:
    """Every chosen writer on one series; runs in a worker process too (`for_writing`)."""
    return write_series(producer.writers, series_output(producer, decoded, items), out_dir)


def series_output(
    producer: Producer, decoded: list[Decoded], items: list[dict[str, Any]]
) -> SeriesOutput:
    """One series as writers receive it: headers, one Frame per per-slice result, typed items."""
    frames = tuple(
        Frame(item.header, index + 1 if is_multiframe(item.header) else None, *item.size)
        for item in decoded
        for index in range(len(item.inputs))
    )
    return SeriesOutput(
        spec=producer.spec,
        engine_key=producer.engine_key,
        sources=tuple(item.header for item in decoded),
        frames=frames,
        items=tuple(typed_all(producer.spec.task, items)),
        predecessors=producer.predecessors,
        other_evidence=producer.other_evidence,
    )


def for_writing(decoded: list[Decoded]) -> list[Decoded]:
    """The decoded series without its model inputs, which writers never read: cheap to send."""
    return [item.without_inputs() for item in decoded]


def summarize(item: dict[str, Any]) -> dict[str, Any]:
    """A result made JSON-friendly: arrays become their summary, not their pixels."""
    return {key: value for key, value in item.items() if not isinstance(value, np.ndarray)}
