"""The spool: received instances on disk, written atomically and durably.

Names come from a hash of the UIDs, never from dataset text, so a hostile UID cannot steer a path.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeimg.durable import fsync_dir, rename_durably, sync_descriptor

TEMP_PREFIX = ".tmp-"
#: where `edgeimg serve` and `edgeimg queue` keep the spool unless told otherwise
DEFAULT_SPOOL = Path("spool")
QUEUE_NAME = "queue.sqlite"
INCOMING = "incoming"


class DiskFull(OSError):
    """Writing would leave less free space than the watermark."""


@dataclass(frozen=True)
class Staged:
    """A written and fsynced temp file, not yet under its instance name."""

    temp: Path


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def uid_hash(uid: str) -> str:
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()


class Spool:
    """A directory of instances: `<root>/series/<hash(series)>/<hash(sop)>.dcm`, each written
    first to a temp file in `<root>/incoming/`."""

    def __init__(self, root: Path, min_free_mb: float = 0) -> None:
        self.root = Path(root).resolve()
        self.min_free = int(min_free_mb * 1024 * 1024)
        for directory in ("series", INCOMING):
            (self.root / directory).mkdir(parents=True, exist_ok=True)

    @property
    def queue_path(self) -> Path:
        return self.root / QUEUE_NAME

    def path_for(self, series_uid: str, sop_uid: str) -> Path:
        return self.root / "series" / uid_hash(series_uid)[:32] / f"{uid_hash(sop_uid)}.dcm"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def write(self, path: Path, chunks: Iterable[bytes], size: int) -> str:
        """Write `chunks` to `path` durably (temp, fsync, rename, fsync dir); returns sha256.

        Refuses up front when `size` would cross the free-space watermark; on any failure the
        temp file is removed, so a reader never sees a partial instance.
        """
        digest = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk

        self.place(self.stage(hashed(), size), path)
        return digest.hexdigest()

    def stage(
        self,
        chunks: Iterable[bytes],
        size: int,
        while_syncing: Callable[[], object] | None = None,
    ) -> Staged:
        """The first half of `write`: a temp file in `incoming/`, written and fsynced.

        It needs no name yet, so the listener stages an instance as soon as it arrives; `place`
        gives it its name, `discard` drops it. `while_syncing` runs once the bytes are written,
        just before the sync: work started there (on other threads) overlaps the wait for the
        disk, which releases the GIL.
        """
        if self.free_bytes() - size < self.min_free:
            raise DiskFull(f"free space below {self.min_free // (1024 * 1024)} MB")
        descriptor, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root / INCOMING)
        try:
            try:
                for chunk in chunks:
                    _write_all(descriptor, chunk)
                if while_syncing is not None:
                    while_syncing()
                sync_descriptor(descriptor)
            finally:
                os.close(descriptor)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return Staged(Path(temp))

    def place(self, staged: Staged, path: Path) -> None:
        """The second half of `write`: rename the staged file to `path`, fsync its directory.

        Only the directory that gains the name is synced: were `incoming/` to keep the old name
        too after a crash, it would be a second link that `remove_temp_files` unlinks.
        """
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent.parent)
        rename_durably(staged.temp, path)

    @staticmethod
    def discard(staged: Staged) -> None:
        staged.temp.unlink(missing_ok=True)

    def remove_temp_files(self) -> int:
        """Delete temp files a killed process left behind; returns how many."""
        count = 0
        temps = (self.root / INCOMING).glob(f"{TEMP_PREFIX}*")
        for temp in itertools.chain(temps, (self.root / "series").glob(f"*/{TEMP_PREFIX}*")):
            temp.unlink(missing_ok=True)
            count += 1
        return count
