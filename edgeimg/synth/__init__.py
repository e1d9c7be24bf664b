"""Synthetic CT: phantoms and a low-dose noise model in numpy, DICOM studies on demand.

The array API (`make_phantom`, `make_slices`, `low_dose`) imports only numpy; `write_study`
and `StudyInfo` load pydicom on first use.
"""

from __future__ import annotations

from typing import Any

from edgeimg.synth.lesions import Lesion
from edgeimg.synth.noise import low_dose
from edgeimg.synth.phantom import PERSIST_MIN, Phantom, make_phantom, make_slices

__all__ = [
    "PERSIST_MIN",
    "Lesion",
    "Phantom",
    "StudyInfo",
    "low_dose",
    "make_phantom",
    "make_slices",
    "write_study",
]


def __getattr__(name: str) -> Any:
    if name in ("write_study", "StudyInfo"):
        from edgeimg.synth import dicom

        return getattr(dicom, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
