"""Files that appear whole or not at all: what the spool and the result writers rely on."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` itself durable (where the platform allows it)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_file(path: Path) -> None:
    """Flush a written file's data and size to disk (the first half of `publish`).

    fdatasync where there is one: it skips only timestamps, never what reading the data needs.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        sync_descriptor(descriptor)
    finally:
        os.close(descriptor)


def sync_descriptor(descriptor: int) -> None:
    """`sync_file` for a file already open."""
    getattr(os, "fdatasync", os.fsync)(descriptor)


def rename_durably(temp: Path, path: Path) -> None:
    """Rename a synced `temp` to `path` and fsync the directory (the second half of `publish`)."""
    try:
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def publish(temp: Path, path: Path) -> None:
    """Sync `temp`, rename it to `path`, fsync the directory: then `path` survives a crash.

    On failure `temp` is removed. The spool runs the two halves separately (`sync_descriptor`
    as it writes, `rename_durably` later), each beside other work.
    """
    try:
        sync_file(temp)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    rename_durably(temp, path)


@contextmanager
def atomic_file(path: Path, prefix: str = ".tmp-") -> Iterator[BinaryIO]:
    """Write through the yielded handle; `path` appears only after fsync, rename and dir fsync.

    On any failure the temp file (named `prefix...` beside `path`) is removed.
    """
    descriptor, temp = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    publish(Path(temp), path)
