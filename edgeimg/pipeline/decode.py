"""Decoding for a model: pydicom, the pixel decoders, windowing and resizing, in worker processes.

The pool's processes decode (and, for `run`, write outputs) while the engine infers in the main
process; each is set up once (`start_worker`) so its heap and its log lines behave.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
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
    """One file decoded for a model: (F, C, H, W) input plus what writers need of its header."""

    path: Path
    header: Dataset
    inputs: np.ndarray
    rows: int
    columns: int

    @property
    def size(self) -> tuple[int, int]:
        return self.rows, self.columns


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


def in_chunks(
    function: Callable[..., T], paths: Sequence[Path], pool: Executor | None, *args: Any
) -> Iterator[T]:
    """`function(path, *args)` for each path in order, computed ahead in the pool (in chunks
    of DECODE_CHUNK) while the caller goes on; in this process when there is no pool."""
    if pool is None:
        yield from (function(path, *args) for path in paths)
        return
    chunks = [paths[start : start + DECODE_CHUNK] for start in range(0, len(paths), DECODE_CHUNK)]
    futures = [pool.submit(_each, function, chunk, args) for chunk in chunks]
    for future in futures:
        yield from future.result()


def _each(function: Callable[..., T], paths: Sequence[Path], args: tuple) -> list[T]:
    return [function(path, *args) for path in paths]


def decode_all(
    paths: Sequence[Path], spec: ModelSpec, pool: Executor | None
) -> Iterator[Decoded | DicomInputError]:
    """Decoded files in order, computed ahead in the pool while the caller infers."""
    return in_chunks(_decode_or_error, paths, pool, spec)


def decode_series(
    jobs: Sequence[SeriesJob], spec: ModelSpec, pool: Executor | None
) -> Iterator[tuple[SeriesJob, list[Decoded | DicomInputError]]]:
    """Each series decoded, with every series queued up front so decoding never waits."""
    paths = [path for job in jobs for path in job.paths]
    decoded = decode_all(paths, spec, pool)
    for job in jobs:
        yield job, [next(decoded) for _ in job.paths]
