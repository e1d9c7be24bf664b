"""Run dicom3tools' dciodvfy on a file and return its error lines (tests skip without it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SKIP_REASON = "dciodvfy not found: apt-get install dicom3tools"


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dciodvfy starts with "Error" for `path`; warnings are not failures."""
    executable = shutil.which("dciodvfy")
    if executable is None:
        pytest.skip(SKIP_REASON)
    completed = subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=60)
    lines = (completed.stdout + completed.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]
