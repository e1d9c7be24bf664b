"""Attribute values read defensively: what cannot be used becomes a `DicomInputError`.

Shared by reading, validation, pixel decoding and geometry, so that every module words a bad
value the same way and never lets a library exception (or a value quoted from the file) out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset

from edgeimg.errors import EdgeimgError
from edgeimg.privacy import scrub

_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins:"


class DicomInputError(EdgeimgError):
    """A DICOM input that cannot be used; `str()` is ``"<file>: <reason>"``."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = scrub(reason)  # values quoted from the file or a library: never in a log

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    items = sequence(ds, keyword)
    return items[0] if items else None


def sequence(ds: Dataset | None, keyword: str) -> Sequence[Dataset]:
    value = get_value(ds, keyword) if ds is not None else None
    return value if isinstance(value, Sequence) and not isinstance(value, str | bytes) else []


def get_value(ds: Dataset | None, keyword: str, name: str | None = None) -> Any:
    """Attribute value or None; a value pydicom cannot convert is an error only with `name`."""
    if ds is None:
        return None
    try:
        return ds.get(keyword)
    except Exception as exc:
        if name is None:
            return None
        raise DicomInputError(name, f"{keyword} cannot be read: {clean(exc)}") from None


def required_int(ds: Dataset, keyword: str, name: str, low: int, high: int) -> int:
    value = get_value(ds, keyword, name)
    if value is None or value == "":
        raise DicomInputError(name, f"{keyword} is missing")
    return _bounded_int(value, keyword, name, low, high)


def optional_int(
    ds: Dataset, keyword: str, name: str, low: int, high: int, default: int = 1
) -> int:
    value = get_value(ds, keyword, name)
    if value is None or value == "":
        return default
    return _bounded_int(value, keyword, name, low, high)


def _bounded_int(value: Any, keyword: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise DicomInputError(name, f"{keyword} {short(value)} is not an integer") from None
    if not low <= number <= high:
        raise DicomInputError(name, f"{keyword} is {number}, outside {low}..{high}")
    return number


def int_or_none(ds: Dataset, keyword: str) -> int | None:
    value = get_value(ds, keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def str_or_none(ds: Dataset, keyword: str, name: str) -> str | None:
    value = get_value(ds, keyword, name)
    return str(value) if value not in (None, "") else None


def float_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def floats(value: Any, count: int) -> Any:
    """`count` finite floats as a tuple, or None."""
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def short(value: Any, limit: int = 80) -> str:
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clean(exc: BaseException) -> str:
    """One line from a library exception, without the tracebacky multi-line layout."""
    text = str(exc).replace(_ALL_PLUGINS_FAILED, "")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "; ".join(line for line in lines if line) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."
