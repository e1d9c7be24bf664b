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


def publish(temp: Path, path: Path) -> None:
    """fsync `temp`, rename it to `path`, fsync the directory: after this `path` survives a crash.

    Split from the writing so that a caller can run it beside other durable work (the spool
    commits the queue row meanwhile); on failure `temp` is removed.
    """
    try:
        descriptor = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
