"""A revised SR names the SR it supersedes (Predecessor Documents Sequence), and stays valid."""

from __future__ import annotations

from pathlib import Path

import pydicom
from dciodvfy import dciodvfy_errors
from pydicom.uid import generate_uid
from test_write import ENGINE, MODEL, ct_image, findings

from edgeimg.dicom.deid import DeidOptions, deidentify
from edgeimg.dicom.sr import write_sr


def _write(sources: list[pydicom.Dataset], out_dir: Path, **options) -> pydicom.Dataset:
    found = findings(sources) if len(sources) == 3 else [{"level": "series", "probability": 0.5}]
    path = write_sr(sources, found, model=MODEL, engine_key=ENGINE, out_dir=out_dir, **options)
    assert dciodvfy_errors(path) == []
    return pydicom.dcmread(path)


def _sources() -> list[pydicom.Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    return [ct_image(index, study, series, frame) for index in range(3)]


def test_a_revised_sr_names_its_predecessor_and_passes_dciodvfy(tmp_path):
    sources = _sources()
    first = _write(sources[:2], tmp_path / "first")
    assert "PredecessorDocumentsSequence" not in first

    second = _write(sources, tmp_path / "second", predecessors=[first])
    [study_item] = second.PredecessorDocumentsSequence
    [series_item] = study_item.ReferencedSeriesSequence
    [instance] = series_item.ReferencedSOPSequence
    assert study_item.StudyInstanceUID == first.StudyInstanceUID == second.StudyInstanceUID
    assert series_item.SeriesInstanceUID == first.SeriesInstanceUID
    assert instance.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == first.SOPClassUID
    # new sources, a new object; the same sources and predecessor again, the same object
    assert second.SOPInstanceUID != first.SOPInstanceUID
    again = _write(sources, tmp_path / "again", predecessors=[first])
    assert again.SOPInstanceUID == second.SOPInstanceUID


def test_a_deidentified_revision_names_the_deidentified_predecessor(tmp_path):
    """A `deid` destination gets copies whose UIDs are mapped with one key: the copy of the
    revision must name the copy of the SR it replaces, not the original's UID."""
    sources = _sources()
    first = _write(sources[:2], tmp_path / "first")
    second = _write(sources, tmp_path / "second", predecessors=[first])
    options = DeidOptions(b"k" * 32)
    first_copy, second_copy = (deidentify(ds, options).dataset for ds in (first, second))
    [study_item] = second_copy.PredecessorDocumentsSequence
    [series_item] = study_item.ReferencedSeriesSequence
    [instance] = series_item.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == first_copy.SOPInstanceUID != first.SOPInstanceUID
    assert series_item.SeriesInstanceUID == first_copy.SeriesInstanceUID
    assert study_item.StudyInstanceUID == first_copy.StudyInstanceUID
