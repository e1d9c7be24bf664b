"""pydicom's writer internals are used in one place, and that place says when an upgrade moved
them.

`edgeimg.dicom.pydicom_write` skips pydicom's repeated ambiguous-VR walks for trees built in
memory; its `ASSUMPTIONS` name what it relies on, pyproject.toml pins the pydicom it was
measured on, and the tests below fail naming what moved, or if a byte differs from dcmwrite's.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
from pydicom import filewriter
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from edgeimg.dicom import pydicom_write as fence
from testsupport.pins import pin_problem

ROOT = Path(__file__).resolve().parent.parent
FENCE = ROOT / "edgeimg" / "dicom" / "pydicom_write.py"
PRIVATE_USE = re.compile(r"\b_character_set\b|\bcorrect_ambiguous_vr\b|\bfilewriter\b")


def _tree(transfer_syntax: str = ExplicitVRLittleEndian, depth: int = 4) -> Dataset:
    """A root with nested items `depth` levels deep, text in a non-default character set."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["fence"])
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    parent = ds
    for level in range(depth):
        item = Dataset()
        item.CodeValue = str(level)
        item.CodeMeaning = f"Stufe {level} é"
        item.ReferencedFrameNumber = [1, 2]
        parent.ContentSequence = Sequence([item, Dataset()])
        parent = item
    return ds


def _bytes(write, ds: Dataset) -> bytes:
    stream = io.BytesIO()
    write(stream, ds)
    return stream.getvalue()


def _dcmwrite(stream, ds):
    pydicom.dcmwrite(stream, ds, enforce_file_format=True)


def test_installed_pydicom_is_within_the_pin():
    assert pin_problem("pydicom", "edgeimg.dicom.pydicom_write") is None


def test_a_version_outside_the_pin_is_named(monkeypatch):
    monkeypatch.setattr("testsupport.pins.version", lambda distribution: "99.0")
    assert "pydicom 99.0 is outside the pin" in pin_problem("pydicom", "the fence")


def test_every_assumption_about_pydicom_internals_holds():
    problems = fence.contract_problems()
    assert not problems, (
        f"pydicom {pydicom.__version__} moved what edgeimg.dicom.pydicom_write relies on:\n  "
        + "\n  ".join(problems)
    )


def test_the_contract_names_what_moved(monkeypatch):
    monkeypatch.delattr(Dataset, "_character_set")
    assert any(p.startswith("Dataset._character_set") for p in fence.contract_problems())


def test_a_tree_built_in_memory_is_written_without_ambiguous_vr_walks(monkeypatch):
    """The point of the fence: pydicom would walk this tree once per level; here never."""
    calls = []
    correct = filewriter.correct_ambiguous_vr

    def counting(ds, *args, **kwargs):
        if not isinstance(ds, FileMetaDataset):  # group 0002 is written apart, and small
            calls.append(ds)
        return correct(ds, *args, **kwargs)

    monkeypatch.setattr(filewriter, "correct_ambiguous_vr", counting)
    _bytes(fence.write_part10, _tree())
    assert calls == []
    _bytes(_dcmwrite, _tree())
    assert len(calls) > 4


def _rich() -> Dataset:
    """A tree using what SR, SEG and plugin objects use: most VRs, empty and multiple values,
    undefined lengths, a character set of an item's own, a private sequence, a group length."""
    ds = _tree()
    ds.StudyDate = "20240102"
    ds.ContentTime = "101112.5"
    ds.InstanceNumber = 7
    ds.Rows = 12
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PatientID = ""
    ds.add_new(0x00091010, "SQ", Sequence([Dataset()]))
    ds.add_new(0x00090010, "LO", "EDGEIMG TEST")
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    item.PersonName = "山田^太郎"
    item.TextValue = "ünïcödé " * 3
    item.NumericValue = "0.93"
    item.FloatingPointValue = 0.93
    item.GraphicData = [1.5, 2.5, 3.5, 4.5]
    item.ReferencedSegmentNumber = [1, 2, 3]
    item.DateTime = "20240102101112"
    item.add_new(0x00290000, "UL", 12)
    item.is_undefined_length_sequence_item = True
    nested = Sequence([item, Dataset()])
    ds.ReferencedSeriesSequence = nested
    ds["ReferencedSeriesSequence"].is_undefined_length = True
    ds.OtherPatientIDsSequence = Sequence()
    ds.ContentSequence[0].EncapsulatedDocument = b"\x00\x01\x02"
    ds.ContentSequence[0].Originator = ""
    return ds


def test_the_bytes_are_dcmwrite_s_and_the_tree_is_left_as_it_was():
    ds = _rich()
    sequences = {tag: ds[tag] for tag in ds.keys() if ds[tag].VR == "SQ"}
    assert _bytes(fence.write_part10, ds) == _bytes(_dcmwrite, _rich())
    assert {tag: ds[tag] for tag in sequences} == sequences
    assert all(ds[tag] is element for tag, element in sequences.items())
    assert ds.original_encoding == (None, None)
    assert ds.original_character_set == Dataset().original_character_set


def _handed_raw(monkeypatch, ds: Dataset) -> int:
    """How many sequences encoded here write_part10 hands dcmwrite for `ds`."""
    encoded, handed = [], []
    dcmwrite, raw = pydicom.dcmwrite, fence._Encoder.raw

    def encoding(self, element, encodings):
        encoded.append(raw(self, element, encodings))
        return encoded[-1]

    def spy(stream, ds, **kwargs):
        handed.extend(ds.get_item(tag) for tag in ds.keys())
        return dcmwrite(stream, ds, **kwargs)

    monkeypatch.setattr(fence._Encoder, "raw", encoding)
    monkeypatch.setattr(fence.pydicom, "dcmwrite", spy)
    fence.write_part10(io.BytesIO(), ds)
    monkeypatch.undo()
    return sum(any(element is each for each in encoded) for element in handed)


def test_the_rich_tree_s_sequences_reach_dcmwrite_encoded(monkeypatch):
    """The test above compares the encoder's bytes, not dcmwrite's fallback."""
    assert _handed_raw(monkeypatch, _rich()) == 3  # Content, OtherPatientIDs, ReferencedSeries


def test_trees_with_something_to_correct_or_decode_are_dcmwrite_s(monkeypatch):
    ambiguous = _tree()
    ambiguous.ContentSequence[0].PixelRepresentation = 1
    ambiguous.ContentSequence[0].SmallestImagePixelValue = -3  # US or SS: corrected by pydicom
    private = _rich()
    private[0x00091010].value[0].SmallestImagePixelValue = 3
    implicit = _tree(ImplicitVRLittleEndian)
    read = pydicom.dcmread(io.BytesIO(_bytes(_dcmwrite, _rich())))
    nested_read = _tree()
    nested_read.ContentSequence.append(read.ContentSequence[0])
    for ds in (ambiguous, private, implicit, read, nested_read):
        assert _handed_raw(monkeypatch, ds) == 0
        assert _bytes(fence.write_part10, ds) == _bytes(_dcmwrite, ds)


def test_a_value_too_long_for_its_vr_is_left_to_dcmwrite(recwarn):
    ds = _tree()
    ds.ContentSequence[0].ContentSequence[0].TextValue = "x" * 70000  # UT: fine
    ds.ContentSequence[0].ContentSequence[0].add_new(0x00204000, "LT", "y" * 70000)  # UN
    assert _bytes(fence.write_part10, ds) == _bytes(_dcmwrite, ds)


def test_only_the_fence_touches_pydicom_writer_internals():
    offenders = {
        str(path.relative_to(ROOT)): hit[0]
        for path in sorted((ROOT / "edgeimg").rglob("*.py"))
        if path != FENCE and (hit := PRIVATE_USE.search(path.read_text()))
    }
    assert not offenders, (
        "pydicom writer internals outside edgeimg/dicom/pydicom_write.py (move them there, "
        f"with an entry in its ASSUMPTIONS): {offenders}"
    )
