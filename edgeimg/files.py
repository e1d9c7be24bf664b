"""Which files a command reads: named files always, DICOM files inside folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def is_dicom_file(path: Path) -> bool:
    """A Part 10 file: the 128-byte preamble, then "DICM"."""
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_files(paths: Iterable[os.PathLike[str] | str]) -> tuple[list[Path], list[Path]]:
    """(files to read, files passed over) under the given files and folders, recursively.

    A file named explicitly is always read, so a bad one is an error; inside a folder, hidden
    files and files that are not DICOM at all (sidecars, notes) are passed over, as dcmtk's
    folder scans do.
    """
    found: list[Path] = []
    passed_over: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)
            continue
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            wanted = not item.name.startswith(".") and is_dicom_file(item)
            (found if wanted else passed_over).append(item)
    return found, passed_over
