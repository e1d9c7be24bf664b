"""The one place that relies on pydicom's writer internals; everything else calls dcmwrite.

pydicom's `write_dataset` runs `correct_ambiguous_vr` on every dataset whose original encoding
differs from the file's, which is every dataset built in memory, and that walk recurses into the
dataset's sequences: an SR of hundreds of nested content items is walked once per level of
nesting (about five times per item), a quarter of its write. A tree with no ambiguous VR and no
raw element has nothing to correct, so for the write each of its datasets is said to be in the
file's encoding already (`Dataset.set_original_encoding`), and is reset after. Any other tree
is written exactly as before. The bytes are the same either way.

That shortcut rests on how `write_dataset` decides to correct (the encoding and character set
comparison) and on `Dataset._character_set`, names pydicom may change in any release, so
pyproject.toml pins the versions they were measured on, `ASSUMPTIONS` lists them, and
tests/test_pydicom_fence.py fails naming the one that moved (`contract_problems`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import BinaryIO

import pydicom
from pydicom import filewriter
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, VR


def write_part10(stream: BinaryIO, dataset: Dataset) -> None:
    """`pydicom.dcmwrite(stream, dataset, enforce_file_format=True)`, without the repeated
    ambiguous-VR walks where the tree has nothing to correct."""
    marked = [(item, item.original_character_set) for item in _datasets_to_mark(dataset)]
    try:
        for item, _ in marked:
            item.set_original_encoding(False, True, item._character_set)
        pydicom.dcmwrite(stream, dataset, enforce_file_format=True)
    finally:
        for item, character_set in marked:
            item.set_original_encoding(None, None, character_set)


def _datasets_to_mark(dataset: Dataset) -> list[Dataset]:
    """Every dataset of the tree, when it is written explicit VR little endian and built in
    memory: no raw element (it would need decoding), no ambiguous VR, none read from a file.
    Otherwise none: pydicom then corrects and converts as it always does."""
    meta = getattr(dataset, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        return []
    found = []
    pending = [dataset]
    while pending:
        item = pending.pop()
        if item.original_encoding != (None, None):
            return []
        found.append(item)
        for element in item.values():
            if isinstance(element, RawDataElement) or element.VR in AMBIGUOUS_VR:
                return []
            if element.VR == VR.SQ:
                pending.extend(element.value)
    return found


def _source_says(function: Callable, *fragments: str) -> Callable[[], str | None]:
    def check() -> str | None:
        source = inspect.getsource(function)
        missing = [fragment for fragment in fragments if fragment not in source]
        return f"no longer contains {missing}" if missing else None

    return check


def _character_set() -> str | None:
    prop = getattr(Dataset, "_character_set", None)
    if not isinstance(prop, property):
        return "Dataset._character_set is not a property"
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    if item._character_set != ["latin_1"]:
        return f"gives {item._character_set!r} for ISO_IR 100, expected ['latin_1']"
    return None


def _original_encoding() -> str | None:
    item = Dataset()
    item.set_original_encoding(False, True, "iso8859")
    if item.original_encoding != (False, True) or item.original_character_set != "iso8859":
        return "set_original_encoding no longer sets original_encoding/original_character_set"
    item.set_original_encoding(None, None, None)
    if item.original_encoding != (None, None):
        return "set_original_encoding(None, None) no longer resets original_encoding"
    return None


#: what `write_part10` relies on in pydicom, and how to tell each still holds
ASSUMPTIONS: tuple[tuple[str, Callable[[], str | None]], ...] = (
    (
        "filewriter.write_dataset corrects only on an encoding or character set change",
        _source_says(
            filewriter.write_dataset,
            "fp_encoding != or_encoding",
            "dataset.original_character_set != dataset._character_set",
            "dataset = correct_ambiguous_vr(dataset, fp.is_little_endian)",
        ),
    ),
    (
        "filewriter.correct_ambiguous_vr recurses into sequences",
        _source_says(filewriter.correct_ambiguous_vr, "correct_ambiguous_vr(item,"),
    ),
    ("Dataset._character_set", _character_set),
    ("Dataset.set_original_encoding", _original_encoding),
)


def contract_problems() -> list[str]:
    """What moved in the installed pydicom, one line per broken assumption."""
    problems = []
    for what, check in ASSUMPTIONS:
        try:
            problem = check()
        except Exception as error:
            problem = f"checking it raised {error!r}"
        if problem:
            problems.append(f"{what}: {problem}")
    return problems
