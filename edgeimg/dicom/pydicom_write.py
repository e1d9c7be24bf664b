"""The one place that relies on pydicom's writer internals; everything else calls dcmwrite.

An SR is hundreds of small nested content items, and pydicom's writer costs per element and
per item far more than the bytes do: `write_dataset` runs `correct_ambiguous_vr` on every
dataset built in memory, a walk that recurses into its sequences (so each item is walked once
per level above it), and `write_data_element` re-derives the character set's codecs for every
element. For a tree with nothing to correct or decode (`_plain`), the root's sequences are
encoded here, once, in pydicom's framing (explicit VR little endian, defined lengths unless an
item or sequence says otherwise) with every value written by pydicom's own value writer, and
handed to dcmwrite as raw elements, which it writes as they are. Anything else, and any
element this encoder does not take (`_Unusual`), is dcmwrite's alone. The bytes are the same
either way; tests/test_pydicom_fence.py compares them.

This rests on names pydicom may change in any release (the `writers` table, how
`write_dataset` decides to correct and writes raw elements, `Dataset._character_set`), so
pyproject.toml pins the versions it was measured on, `ASSUMPTIONS` lists them, and
tests/test_pydicom_fence.py fails naming the one that moved (`contract_problems`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from struct import pack
from typing import BinaryIO

import pydicom
from pydicom import filewriter
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, CUSTOMIZABLE_CHARSET_VR, EXPLICIT_VR_LENGTH_32, VR

from edgeimg import fence


def write_part10(stream: BinaryIO, dataset: Dataset) -> None:
    """`pydicom.dcmwrite(stream, dataset, enforce_file_format=True)`, byte for byte, in a
    fraction of the time where the tree is plain (`_plain`): its sequences are encoded here,
    every value by pydicom's own value writer, and handed to dcmwrite as raw elements, which it
    writes as they are; the header and the root's other elements are dcmwrite's."""
    sequences = [
        element
        for element in dataset.values()
        if element.VR == VR.SQ and not element.tag.is_private
    ]
    try:
        if not _plain(dataset):
            raise _Unusual("not a plain tree")
        encoder = _Encoder()
        encodings = encoder.encodings(dataset, default_encoding)
        raw = [encoder.raw(element, encodings) for element in sequences]
    except _Unusual:
        pydicom.dcmwrite(stream, dataset, enforce_file_format=True)
        return
    character_set = dataset.original_character_set
    dataset.set_original_encoding(False, True, dataset._character_set)
    try:
        for element in raw:
            dataset[element.tag] = element
        pydicom.dcmwrite(stream, dataset, enforce_file_format=True)
    finally:
        for element in sequences:
            dataset[element.tag] = element
        dataset.set_original_encoding(None, None, character_set)


class _Unusual(Exception):
    """What the encoder here leaves to dcmwrite: an item read from a file, a raw element or one
    of an ambiguous VR, a value pydicom would write as UN, one buffered or of undefined length."""


class _Encoder:
    """Encodes the items of one tree's sequences as pydicom's write_sequence would."""

    def __init__(self) -> None:
        self._codecs: dict[object, list[str]] = {}

    def encodings(self, dataset: Dataset, parent: str | list[str]) -> list[str]:
        """The Python encodings pydicom's writers use for `dataset`'s text (write_dataset's
        choice), converted once per distinct character set rather than once per element."""
        given = dataset.get("SpecificCharacterSet", parent) or [default_encoding]
        key = given if isinstance(given, str) else tuple(given)
        if key not in self._codecs:
            self._codecs[key] = convert_encodings(given)
        return self._codecs[key]

    def raw(self, element: DataElement, encodings: list[str]) -> RawDataElement:
        """The sequence `element` as the raw element dcmwrite writes as it is."""
        value, undefined = self.sequence(element, encodings)
        length = 0xFFFFFFFF if undefined else len(value)
        return RawDataElement(element.tag, VR.SQ, length, value, 0, False, True)

    def sequence(self, element: DataElement, encodings: list[str]) -> tuple[bytes, bool]:
        """A sequence's items as write_sequence writes them, and whether its length is
        undefined."""
        parts = []
        for item in element.value:
            body = self.dataset(item, encodings)
            if getattr(item, "is_undefined_length_sequence_item", False):
                parts += (_ITEM_UNDEFINED, body, _ITEM_END)
            else:
                parts += (pack("<HHL", 0xFFFE, 0xE000, len(body)), body)
        return b"".join(parts), element.is_undefined_length

    def dataset(self, dataset: Dataset, parent: list[str]) -> bytes:
        """One item's elements as write_dataset writes them (explicit VR little endian): values
        by pydicom's writers into one buffer, then each behind its tag, VR and length."""
        if dataset.original_encoding != (None, None):
            raise _Unusual("an item read from a file")
        encodings = self.encodings(dataset, parent)
        buffer = DicomBytesIO()
        buffer.is_little_endian = True
        buffer.is_implicit_VR = False
        values: list[tuple[int, str, bytes | int, bool]] = []
        for element in sorted(dataset.values(), key=_tag_number):
            tag = element.tag
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue  # retired group length
            vr = element.VR
            if isinstance(element, RawDataElement) or vr in AMBIGUOUS_VR:
                raise _Unusual(f"{tag}: raw or of an ambiguous VR")
            if vr == VR.SQ:
                value, undefined = self.sequence(element, encodings)
                values.append((tag, vr, value, undefined))
                continue
            if element.is_buffered or element.is_undefined_length or vr not in filewriter.writers:
                raise _Unusual(f"{tag}: buffered, of undefined length or of VR {vr}")
            if not element.is_empty:
                write, parameter = filewriter.writers[vr]
                if vr in CUSTOMIZABLE_CHARSET_VR:
                    write(buffer, element, encodings=encodings)
                elif parameter is not None:
                    write(buffer, element, parameter)
                else:
                    write(buffer, element)
            values.append((tag, vr, buffer.tell(), False))
        data = buffer.getvalue()
        parts = []
        start = 0
        for tag, vr, value, undefined in values:
            if isinstance(value, int):
                value, start = data[start:value], value
            group, number = tag >> 16, tag & 0xFFFF
            if undefined:
                parts += (pack("<HH2s2xL", group, number, b"SQ", 0xFFFFFFFF), value, _SEQUENCE_END)
            elif vr in EXPLICIT_VR_LENGTH_32:
                parts += (pack("<HH2s2xL", group, number, vr.encode(), len(value)), value)
            elif len(value) > 0xFFFF:
                raise _Unusual(f"{tag}: {len(value)} bytes in a VR of 16-bit length")
            else:
                parts += (pack("<HH2sH", group, number, vr.encode(), len(value)), value)
        return b"".join(parts)


def _tag_number(element: DataElement) -> int:
    return int(element.tag)


_ITEM_UNDEFINED = pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _plain(dataset: Dataset) -> bool:
    """Written explicit VR little endian and built in memory: no dataset of the tree was read
    from a file, no element is raw (it would need decoding) or of an ambiguous VR (it would
    need correcting). Anything else is dcmwrite's alone. The root and what pydicom itself will
    write under it (private sequences) are looked at here, the items `_Encoder` encodes as it
    goes: the tree is walked once."""
    meta = getattr(dataset, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        return False
    pending = [dataset]
    while pending:
        item = pending.pop()
        if item.original_encoding != (None, None):
            return False
        for element in item.values():
            if isinstance(element, RawDataElement) or element.VR in AMBIGUOUS_VR:
                return False
            if element.VR == VR.SQ and (item is not dataset or element.tag.is_private):
                pending.extend(element.value)
    return True


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


def _writers() -> str | None:
    table = getattr(filewriter, "writers", None)
    if not isinstance(table, dict):
        return "filewriter.writers is not a dict"
    missing = [vr for vr in VR if vr not in table and vr not in AMBIGUOUS_VR]
    if missing:
        return f"filewriter.writers lacks {missing}"
    if not all(isinstance(entry, tuple) and len(entry) == 2 for entry in table.values()):
        return "filewriter.writers entries are no longer (function, parameter)"
    return None


#: what `write_part10` relies on in pydicom, and how to tell each still holds
ASSUMPTIONS: tuple[fence.Assumption, ...] = (
    (
        "filewriter.write_dataset corrects only on an encoding or character set change",
        _source_says(
            filewriter.write_dataset,
            "fp_encoding != or_encoding",
            "dataset.original_character_set != dataset._character_set",
            "dataset = correct_ambiguous_vr(dataset, fp.is_little_endian)",
            "get_item: Callable",
        ),
    ),
    (
        "filewriter.write_dataset skips group lengths and takes the character set so",
        _source_says(
            filewriter.write_dataset,
            "tag.element == 0 and tag.group > 6",
            'dataset.get("SpecificCharacterSet", parent_encoding)',
        ),
    ),
    (
        "filewriter.write_data_element writes raw values as they are, others by writers[VR]",
        _source_says(
            filewriter.write_data_element,
            "buffer.write(cast(bytes, elem.value))",
            "is_undefined_length = elem.length == 0xFFFFFFFF",
            "encodings = encodings or [default_encoding]",
            "encodings = convert_encodings(encodings)",
            "fn(buffer, elem, encodings=encodings)",
            "fn(buffer, elem, param)",
            "EXPLICIT_VR_LENGTH_32",
        ),
    ),
    (
        "filewriter.write_sequence_item frames items",
        _source_says(
            filewriter.write_sequence_item,
            "is_undefined_length_sequence_item",
            "write_dataset(fp, dataset, parent_encoding=encodings)",
        ),
    ),
    ("filewriter.writers", _writers),
    ("Dataset._character_set", _character_set),
    ("Dataset.set_original_encoding", _original_encoding),
)


def contract_problems() -> list[str]:
    """What moved in the installed pydicom, one line per broken assumption."""
    return fence.problems(ASSUMPTIONS)
