"""From DICOM files to model results and output objects: what `run` and `serve` share.

Decoding (pydicom, the pixel decoders, windowing, resizing) runs in worker processes while the
engine infers in this one. Results reach output files only through the writers the model's
spec chose (`edgeimg.writers`), so `run` and `serve` write the same things.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from edgeimg.dicom.frames import frame_count
from edgeimg.dicom.preprocess import to_model_input
from edgeimg.dicom.read import DicomInputError, read_header, read_image
from edgeimg.dicom.series import Series, group_series
from edgeimg.files import dicom_files
from edgeimg.privacy import capture, scrub
from edgeimg.sdk.model import ModelSpec
from edgeimg.writers import Frame, SeriesOutput, Writer, Written, choose, write_series
from edgeimg.writers.items import typed_all


@dataclass
class Decoded:
    """One file decoded for a model: (F, C, H, W) input plus what writers need of its header."""

    path: Path
    header: Dataset
    inputs: np.ndarray
    rows: int
    columns: int

    @property
    def size(self) -> tuple[int, int]:
        return self.rows, self.columns


@dataclass
class SeriesJob:
    """One series as the model will see it, or why it will not."""

    series: Series
    paths: list[Path]
    skip: str | None = None


@dataclass
class Scan:
    """What a set of paths holds: series to run, files that could not be read or were passed
    over, and files that repeat an instance already found (same SOP Instance UID)."""

    jobs: list[SeriesJob] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0

    def describe(self) -> str:
        """What was scanned and found, in one line (for a run with nothing to do)."""
        found = sum(len(job.paths) for job in self.jobs)
        return (
            f"scanned {self.files} file(s): {found} DICOM image(s) in {len(self.jobs)} series, "
            f"{len(self.skipped)} not DICOM, {len(self.errors)} unreadable, "
            f"{len(self.duplicates)} duplicate(s)"
        )


def accepts(spec: ModelSpec, series: Series, headers: Sequence[Dataset]) -> str | None:
    """Why the model does not take this series, or None when it does."""
    modality = series.modality or "?"
    if spec.modalities and modality not in spec.modalities:
        return f"modality {modality} is not one the model takes ({', '.join(spec.modalities)})"
    classes = {str(header.get("SOPClassUID", "")) for header in headers}
    unsupported = sorted(classes - set(spec.sop_classes))
    if spec.sop_classes and unsupported:
        return f"SOP class {unsupported[0]} is not one the model takes"
    slices = sum(frame_count(header) for header in headers)
    if spec.input.sequence and slices < spec.input.min_length:
        return f"{slices} slices; the model needs at least {spec.input.min_length}"
    return None


def scan(paths: Sequence[Path], spec: ModelSpec) -> Scan:
    """Read headers, group series, and decide per series whether the model takes it."""
    result = Scan()
    headers: list[Dataset] = []
    files, passed_over = dicom_files(paths)
    result.files = len(files) + len(passed_over)
    for path in passed_over:
        result.skipped.append(
            {"status": "skipped", "file": str(path), "reason": "not a DICOM file"}
        )
    first: dict[str, str] = {}
    for path in files:
        try:
            header = read_header(path)
        except DicomInputError as error:
            result.errors.append({"status": "error", "file": str(path), "error": scrub(error)})
            continue
        uid = str(header.SOPInstanceUID)
        if uid in first:
            reason = f"same SOP Instance UID as {first[uid]}; only that file is run"
            result.duplicates.append(
                {
                    "status": "duplicate",
                    "file": str(path),
                    "sop_instance_uid": uid,
                    "duplicate_of": first[uid],
                    "reason": reason,
                }
            )
            continue
        first[uid] = str(path)
        header.filename = str(path)
        headers.append(header)
    for series in group_series(headers):
        members = list(series.instances)
        job = SeriesJob(series, [Path(h.filename) for h in members])
        job.skip = accepts(spec, series, members)
        result.jobs.append(job)
    return result


def decode_file(path: Path, spec: ModelSpec) -> Decoded:
    """Decode and preprocess one file (runs in a worker process)."""
    image = read_image(path)
    model_input = spec.input
    inputs = to_model_input(
        image,
        size=model_input.size,
        window=(model_input.window_center, model_input.window_width),
        channels=model_input.channels,
    )
    rows, columns = image.frames.shape[1:3]
    return Decoded(path, image.header, inputs, int(rows), int(columns))


def _decode_or_error(path: Path, spec: ModelSpec) -> Decoded | DicomInputError:
    try:
        return decode_file(path, spec)
    except DicomInputError as error:
        return error


def decoder_pool(workers: int) -> Executor:
    """Worker processes for decoding; forkserver keeps them clear of the engine's threads."""
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(
        max_workers=max(1, workers), mp_context=context, initializer=start_worker
    )


def start_worker() -> None:
    """A decoding/writing worker's setup: its library warnings and logs are scrubbed events too."""
    capture()
    keep_freed_memory()


#: glibc mallopt parameters (malloc.h) and the values a decoding worker uses
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 64 << 20
_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> None:
    """Let glibc reuse freed memory for the next slice instead of returning it to the kernel.

    A fresh process maps each multi-megabyte array (file bytes, pixels, float copies) anew and
    pays a page fault per 4 KiB touched; a decoding worker did the same work 1.5 to 2 times
    slower than a long-lived process until its heap kept what it had freed. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    except (OSError, AttributeError):
        pass


#: files per task sent to a decoding worker: one task per file spent more on the pool's
#: bookkeeping (about 2 ms a file) than on decoding a 512 x 512 slice (1.5 ms)
DECODE_CHUNK = 8


def decode_all(
    paths: Sequence[Path], spec: ModelSpec, pool: Executor | None
) -> Iterator[Decoded | DicomInputError]:
    """Decoded files in order, computed ahead in the pool while the caller infers."""
    if pool is None:
        yield from (_decode_or_error(path, spec) for path in paths)
        return
    chunks = [paths[start : start + DECODE_CHUNK] for start in range(0, len(paths), DECODE_CHUNK)]
    futures = [pool.submit(_decode_chunk, chunk, spec) for chunk in chunks]
    for future in futures:
        yield from future.result()


def _decode_chunk(paths: Sequence[Path], spec: ModelSpec) -> list[Decoded | DicomInputError]:
    return [_decode_or_error(path, spec) for path in paths]


def decode_series(
    jobs: Sequence[SeriesJob], spec: ModelSpec, pool: Executor | None
) -> Iterator[tuple[SeriesJob, list[Decoded | DicomInputError]]]:
    """Each series decoded, with every series queued up front so decoding never waits."""
    paths = [path for job in jobs for path in job.paths]
    decoded = decode_all(paths, spec, pool)
    for job in jobs:
        yield job, [next(decoded) for _ in job.paths]


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
        stacked = np.concatenate([item.inputs for item in decoded]).astype(np.float32)
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
            "sop_instance_uids": [str(item.header.SOPInstanceUID) for item in decoded],
            "frames": [len(item.inputs) for item in decoded],
            "results": [summarize(item) for item in items],
            "outputs": [],
            "issues": list(job.series.issues),
            "complete": job.series.complete,
            "seconds": round(time.perf_counter() - started, 4),
        }
        return SeriesResult(line, decoded, items)


def write_outputs(
    producer: Producer, decoded: list[Decoded], items: list[dict[str, Any]], out_dir: Path
) -> Written:
    """Every chosen writer on one series; runs in a worker process too (`for_writing`)."""
    return write_series(producer.writers, series_output(producer, decoded, items), out_dir)


def series_output(
    producer: Producer, decoded: list[Decoded], items: list[dict[str, Any]]
) -> SeriesOutput:
    """One series as writers receive it: headers, one Frame per per-slice result, typed items."""
    from edgeimg.dicom.frames import is_multiframe

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
    return [replace(item, inputs=item.inputs[:, :0]) for item in decoded]


def summarize(item: dict[str, Any]) -> dict[str, Any]:
    """A result made JSON-friendly: arrays become their summary, not their pixels."""
    return {key: value for key, value in item.items() if not isinstance(value, np.ndarray)}
