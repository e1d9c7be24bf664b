"""Errors as users see them: our own sentences, never a library's text or a traceback.

A library's exception text can quote the values it choked on (a patient's name, an ID), and its
traceback means nothing to a radiographer. Errors we raise on purpose say what is wrong in
our own words; anything else is reported by its type and where it happened, which is enough
for a bug report and holds no data from the image.
"""

from __future__ import annotations

import traceback
from pathlib import Path


class EdgeimgError(Exception):
    """An error whose text is ours: it names files, UIDs and attributes, never their values."""


class ContractError(EdgeimgError):
    """A plugin's implementation lacks a method a command needs; says which, who needs it, and
    which SDK base class provides it (see edgeimg.sdk.implementation.missing)."""


def user_message(error: BaseException, doing: str) -> str:
    """Our own text for our errors; type and place for anything else (see `internal_error`)."""
    return str(error) if isinstance(error, EdgeimgError) else internal_error(error, doing)


def internal_error(error: BaseException, doing: str) -> str:
    """One line for an unexpected exception: what we were doing, its type and innermost place."""
    frames = traceback.extract_tb(error.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        parts = Path(last.filename).parts
        where = f" at {'/'.join(parts[-2:])}:{last.lineno}"
    return f"internal error while {doing}: {type(error).__name__}{where}"
