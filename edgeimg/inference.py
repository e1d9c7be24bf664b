"""From DICOM files to model results and output objects: what `run` and `serve` share.

Decoding (pydicom, the pixel decoders, windowing, resizing) runs in worker processes while the
engine infers in this one. Each model task has one place where raw results become output
objects (SR, SEG, derived images), so `run` and `serve` write the same things.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from edgeimg.dicom.frames import frame_count
from edgeimg.dicom.preprocess import resize, to_model_input
from edgeimg.dicom.read import DicomInputError, read_header, read_image
from edgeimg.dicom.series import Series, group_series
from edgeimg.dicom.write import OutputRefused
from edgeimg.errors import EdgeimgError, internal_error
from edgeimg.files import dicom_files
from edgeimg.model import ModelSpec
from edgeimg.privacy import capture, scrub


@dataclass
class Decoded:
    """One file decoded for a model: (F, C, H, W) input plus what writers need of its header."""

    path: Path
    header: Dataset
    inputs: np.ndarray
    rows: int
    columns: int


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
    """Who made a result, as the writers record it; small enough to send to a worker process."""

    spec: ModelSpec
    engine_key: str
    predecessors: tuple[Dataset, ...] = ()  # earlier SRs a revised result supersedes
    other_evidence: tuple[Dataset, ...] = ()  # prior studies the model compared with


@dataclass
class SeriesResult:
    """Everything one series produced, as a results.jsonl line."""

    line: dict[str, Any]
    decoded: list[Decoded]
    items: list[dict[str, Any]]


class Inferencer:
    """Runs an engine over decoded slices or series and writes the task's outputs."""

    def __init__(self, spec: ModelSpec, engine: Any, batch: int = 8) -> None:
        self.spec = spec
        self.engine = engine
        self.batch = batch
        self.implementation = spec.load()(spec)
        self.producer = Producer(spec, engine.key)

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

    def write(
        self, decoded: list[Decoded], items: list[dict[str, Any]], out_dir: Path
    ) -> list[str]:
        """Write the DICOM outputs for one series; return their paths."""
        return write_outputs(self.producer, decoded, items, out_dir)

    def run_series(self, job: SeriesJob, decoded: list[Decoded], out_dir: Path) -> SeriesResult:
        """Infer and write one series here and now (what `serve` does per job)."""
        result = self.infer_series(job, decoded)
        started = time.perf_counter()
        result.line["outputs"] = self.write(decoded, result.items, out_dir)
        result.line["seconds"] = round(result.line["seconds"] + time.perf_counter() - started, 4)
        return result

    def infer_series(self, job: SeriesJob, decoded: list[Decoded]) -> SeriesResult:
        """Infer one series; its line has no outputs yet (`write_outputs` adds them)."""
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
) -> list[str]:
    """The DICOM outputs of one series; runs in a worker process too (`for_writing`)."""
    writer = OUTPUTS.get(producer.spec.task)
    if writer is None:
        return []
    try:
        return [str(path) for path in writer(producer, decoded, items, out_dir)]
    except EdgeimgError:
        raise
    except Exception as error:  # a library's text may quote source values; ours never does
        raise OutputRefused(
            internal_error(error, f"writing the {producer.spec.task} outputs")
        ) from None


def for_writing(decoded: list[Decoded]) -> list[Decoded]:
    """The decoded series without its model inputs, which writers never read: cheap to send."""
    return [replace(item, inputs=item.inputs[:, :0]) for item in decoded]


def summarize(item: dict[str, Any]) -> dict[str, Any]:
    """A result made JSON-friendly: arrays become their summary, not their pixels."""
    summary = {}
    for key, value in item.items():
        if isinstance(value, np.ndarray):
            continue
        summary[key] = value
    return summary


def _sources(decoded: list[Decoded]) -> list[Dataset]:
    return [item.header for item in decoded]


def _frames(decoded: list[Decoded]) -> list[Decoded]:
    """One entry per frame, so per-slice results line up with their source files."""
    return [item for item, _ in _numbered_frames(decoded)]


def _numbered_frames(decoded: list[Decoded]) -> list[tuple[Decoded, int | None]]:
    """Each frame with its 1-based number in a multi-frame source (None for single-frame)."""
    from edgeimg.dicom.frames import is_multiframe

    return [
        (item, index + 1 if is_multiframe(item.header) else None)
        for item in decoded
        for index in range(len(item.inputs))
    ]


def _reference(source: Decoded, frame: int | None) -> dict[str, Any]:
    """How a finding names its image: the SOP Instance UID, and the frame when there are many."""
    reference: dict[str, Any] = {"sop_instance_uid": str(source.header.SOPInstanceUID)}
    if frame is not None:
        reference["frame"] = frame
    return reference


def _identity(producer: Producer, out_dir: Path) -> dict[str, Any]:
    """What every writer is told about the producer and where to write."""
    return {"model": producer.spec, "engine_key": producer.engine_key, "out_dir": out_dir}


def _series_finding(decoded: list[Decoded], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The series-level finding of a slice classifier: its most confident slice, named."""
    (source, frame), best = max(
        zip(_numbered_frames(decoded), items, strict=True), key=lambda p: p[1]["probability"]
    )
    return {
        "level": "series",
        "probability": best["probability"],
        "label": any(item["label"] for item in items),
        "sop_instance_uids": [str(source.header.SOPInstanceUID)],
        "frames": [frame],
    }


def _write_classification(producer: Producer, decoded, items, out_dir: Path) -> list[Path]:
    """TID 1500 SR: the series-level finding, then one group per slice with the finding.

    Every slice's probability is in results.jsonl; the SR carries the findings, which keeps it
    small enough to build quickly (highdicom's cost grows with each measurement group).
    """
    from edgeimg.dicom.sr import write_sr

    if producer.spec.input.sequence:
        findings = [
            {"level": "series", "probability": item["probability"], "label": item["positive"]}
            for item in items
        ]
    else:
        findings = [_series_finding(decoded, items)] + [
            {**_reference(source, frame), "probability": item["probability"], "label": True}
            for (source, frame), item in zip(_numbered_frames(decoded), items, strict=True)
            if item["label"]
        ]
    return [
        write_sr(
            _sources(decoded),
            findings,
            **_identity(producer, out_dir),
            predecessors=producer.predecessors,
            other_evidence=producer.other_evidence,
        )
    ]


def _write_detection(producer: Producer, decoded, items, out_dir: Path) -> list[Path]:
    """TID 1500 SR with one planar ROI (box and score) per detection, in source pixels."""
    from edgeimg.dicom.sr import write_sr

    height, width = producer.spec.input.size
    findings = []
    for (source, frame), item in zip(_numbered_frames(decoded), items, strict=True):
        scale = np.array([source.columns / width, source.rows / height] * 2)
        boxes = [
            [*(np.asarray(box) * scale).round(1).tolist(), score]
            for box, score in zip(item["boxes"], item["scores"], strict=True)
        ]
        if boxes:
            findings.append({**_reference(source, frame), "boxes": boxes})
    if not findings:
        findings = [{**_reference(*_numbered_frames(decoded)[0]), "boxes": []}]
    return [
        write_sr(
            _sources(decoded),
            findings,
            **_identity(producer, out_dir),
            predecessors=producer.predecessors,
            other_evidence=producer.other_evidence,
        )
    ]


def _write_segmentation(producer: Producer, decoded, items, out_dir: Path) -> list[Path]:
    """SEG with the masks resampled back onto the source geometry."""
    from edgeimg.dicom.seg import resample_mask, write_seg

    masks = np.stack(
        [
            resample_mask(item["mask"], (source.rows, source.columns))
            for source, item in zip(_frames(decoded), items, strict=True)
        ]
    )
    return [write_seg(_sources(decoded), masks, **_identity(producer, out_dir))]


def _write_enhanced(producer: Producer, decoded, items, out_dir: Path) -> list[Path]:
    """Derived images in HU: the model's [0, 1] window mapped back and resized to the source."""
    from edgeimg.dicom.derived import write_derived

    spec_input = producer.spec.input
    low = spec_input.window_center - spec_input.window_width / 2
    images = np.stack(
        [
            resize(item["image"].astype(np.float32), (source.rows, source.columns))
            * spec_input.window_width
            + low
            for source, item in zip(_frames(decoded), items, strict=True)
        ]
    )
    return write_derived(_sources(decoded), images, **_identity(producer, out_dir))


OUTPUTS: dict[str, Callable[..., list[Path]]] = {
    "classify": _write_classification,
    "series-classify": _write_classification,
    "detect": _write_detection,
    "segment": _write_segmentation,
    "enhance": _write_enhanced,
    "anomaly": _write_enhanced,
}
