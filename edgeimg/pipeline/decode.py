"""Decoding for a model: pydicom, the pixel decoders, windowing and resizing, in worker processes.

The pool's processes decode (and, for `run`, write outputs) while the engine infers in the main
process; each is set up once (`start_worker`) so its heap and its log lines behave.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydicom.dataset import Dataset

from edgeimg.dicom.preprocess import to_model_input
from edgeimg.dicom.read import DicomInputError, read_image
from edgeimg.privacy import capture
from edgeimg.sdk.model import ModelSpec

if TYPE_CHECKING:
    from edgeimg.pipeline.headers import SeriesJob

T = TypeVar("T")


@dataclass
class Decoded:
    """One file decoded for a model: (F, C, H, W) input plus what writers need of its header.

    Pickled (worker to `run`'s main process, and on to the worker that writes), the header
    travels as bytes, unpickled only where it is read: the main process does not read it,
    and unpickling it there, then pickling it again for the writer, was a tenth of the
    main process's CPU per image.
    """

    path: Path
    header: Dataset
    inputs: np.ndarray
    rows: int
    columns: int

    @property
    def size(self) -> tuple[int, int]:
        return self.rows, self.columns

    @property
    def sop_instance_uid(self) -> str:
        """The SOP Instance UID, without unpickling the header for it."""
        uid = self.__dict__.get("_uid")
        return uid if uid is not None else str(self.header.SOPInstanceUID)

    def without_inputs(self) -> Decoded:
        """The same file without its model inputs (which writers never read): cheap to send."""
        twin = object.__new__(Decoded)
        twin.__dict__.update(self.__dict__)
        twin.inputs = self.inputs[:, :0]
        return twin

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        header = state.pop("header", None)
        if state.get("_header_bytes") is None:
            state["_header_bytes"] = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
            state["_uid"] = str(header.get("SOPInstanceUID", "")) if header is not None else ""
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        """The header, unpickled on first use (only a pickled Decoded lacks it)."""
        blob = self.__dict__.get("_header_bytes")
        if name != "header" or blob is None:
            raise AttributeError(name)
        header = self.__dict__["header"] = pickle.loads(blob)  # the bytes stay what is sent
        return header

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "header":  # a header set anew is the one to send
            self.__dict__.pop("_header_bytes", None)
            self.__dict__.pop("_uid", None)
        object.__setattr__(self, name, value)


def decode_file(path: Path, spec: ModelSpec, *, require_uids: bool = True) -> Decoded:
    """Decode and preprocess one file (runs in a worker process); `require_uids=False` for
    files that are only read, never filed or answered (INT8 calibration data)."""
    image = read_image(path, require_uids=require_uids)
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


#: imported once in the forkserver, so that every worker forks with it (`edgeimg.pipeline.warm`)
PRELOAD = ("edgeimg.pipeline.warm",)


class DecoderPool(ProcessPoolExecutor):
    """The worker processes `run` decodes and writes in; `workers` says how many."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        self.workers = max(1, workers)
        super().__init__(max_workers=self.workers, mp_context=context, initializer=start_worker)


def decoder_pool(workers: int) -> DecoderPool:
    """Worker processes for decoding, started now so they come up while the caller goes on;
    forkserver keeps them clear of the engine's threads.

    A forkserver pool starts all its processes on its first task, and starting the forkserver
    (its preloads) holds up whoever submits it: a thread does, and the caller goes on.
    """
    pool = DecoderPool(workers)
    threading.Thread(target=_start, args=(pool,), name="edgeimg-pool-start").start()
    return pool


def _start(pool: Executor) -> None:
    with contextlib.suppress(RuntimeError):  # shut down before it started: nothing to start
        pool.submit(int)


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


#: decoding chunks in flight per worker: enough to keep the workers busy while the engine
#: infers a series, few enough that the outputs written in the same pool do not queue
#: behind every decode of the run (they did: a writing tail of a third of the run)
READAHEAD = 4


def in_chunks(
    function: Callable[..., T],
    paths: Sequence[Path],
    pool: Executor | None,
    *args: Any,
    ahead: int | None = None,
) -> Iterator[T]:
    """`function(path, *args)` for each path in order, computed ahead in the pool (in chunks
    of DECODE_CHUNK, at most `ahead` chunks in flight; None: all) while the caller goes on; in
    this process when there is no pool."""
    if pool is None:
        yield from (function(path, *args) for path in paths)
        return
    chunks = [paths[start : start + DECODE_CHUNK] for start in range(0, len(paths), DECODE_CHUNK)]
    pending: deque[Future] = deque()
    for chunk in chunks:
        if ahead is not None and len(pending) >= ahead:
            yield from pending.popleft().result()
        pending.append(pool.submit(_each, function, chunk, args))
    while pending:
        yield from pending.popleft().result()


def _each(function: Callable[..., T], paths: Sequence[Path], args: tuple) -> list[T]:
    return [function(path, *args) for path in paths]


def decode_all(
    paths: Sequence[Path], spec: ModelSpec, pool: Executor | None, ahead: int | None = None
) -> Iterator[Decoded | DicomInputError]:
    """Decoded files in order, computed ahead in the pool while the caller infers."""
    return in_chunks(_decode_or_error, paths, pool, spec, ahead=ahead)


def decode_series(
    jobs: Sequence[SeriesJob], spec: ModelSpec, pool: Executor | None
) -> Iterator[tuple[SeriesJob, list[Decoded | DicomInputError]]]:
    """Each series decoded, decoding running on ahead across series (READAHEAD chunks per
    worker) so that it never waits for the engine and writes queued meanwhile are not last."""
    paths = [path for job in jobs for path in job.paths]
    workers = pool.workers if isinstance(pool, DecoderPool) else 1
    decoded = decode_all(paths, spec, pool, ahead=READAHEAD * workers)
    for job in jobs:
        yield job, [next(decoded) for _ in job.paths]
