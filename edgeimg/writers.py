"""Result writers: each turns one kind of model result into output files.

The built-in writers are registered here, as a default plugin, through the same hook a
third-party package would use. The writing code is imported only when a writer runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeimg import hookimpl


@dataclass(frozen=True)
class Writer:
    """A result kind (sr, seg, derived, json, ...) and the "module:function" that writes it."""

    kind: str
    summary: str
    function: str

    def load(self) -> Callable[..., Any]:
        module_name, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "summary": self.summary, "function": self.function}


@hookimpl
def register_writers(register):
    register(
        Writer(
            "json", "JSON lines with scores, labels and source UIDs", "edgeimg.results:write_json"
        )
    )
    register(Writer("sr", "TID 1500 Comprehensive 3D SR of findings", "edgeimg.dicom.sr:write_sr"))
    register(Writer("seg", "DICOM SEG (binary) of segment masks", "edgeimg.dicom.seg:write_seg"))
    register(
        Writer("derived", "Derived images in a new series", "edgeimg.dicom.derived:write_derived")
    )
