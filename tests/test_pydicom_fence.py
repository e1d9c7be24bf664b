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
import tomllib
from packaging.requirements import Requirement
from pydicom import filewriter
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from edgeimg.dicom import pydicom_write as fence

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
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [Requirement(dep) for dep in project["dependencies"] if dep.startswith("pydicom")]
    assert pin.specifier, "pydicom must be pinned: edgeimg.dicom.pydicom_write relies on it"
    assert pin.specifier.contains(pydicom.__version__), (
        f"pydicom {pydicom.__version__} is outside the pin {pin}: run this module's contract "
        "test, then move the pin"
    )


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


def test_the_bytes_are_dcmwrite_s_and_the_tree_is_left_as_it_was():
    ds = _tree()
    assert _bytes(fence.write_part10, ds) == _bytes(_dcmwrite, _tree())
    item = ds.ContentSequence[0].ContentSequence[0]
    assert ds.original_encoding == item.original_encoding == (None, None)
    assert (
        ds.original_character_set == item.original_character_set == Dataset().original_character_set
    )


def test_trees_with_something_to_correct_take_pydicom_s_way():
    ambiguous = _tree()
    ambiguous.ContentSequence[0].PixelRepresentation = 1
    ambiguous.ContentSequence[0].SmallestImagePixelValue = -3  # US or SS: corrected by pydicom
    implicit = _tree(ImplicitVRLittleEndian)
    stream = io.BytesIO(_bytes(_dcmwrite, _tree()))
    read = pydicom.dcmread(stream)
    for ds in (ambiguous, implicit, read):
        assert fence._datasets_to_mark(ds) == []
    assert _bytes(fence.write_part10, ambiguous) == _bytes(_dcmwrite, ambiguous)
    assert _bytes(fence.write_part10, read) == _bytes(_dcmwrite, read)
    assert len(fence._datasets_to_mark(_tree(depth=3))) == 7


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
