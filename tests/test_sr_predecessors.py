"""A revised SR names the SR it supersedes (Predecessor Documents Sequence), and stays valid."""

from __future__ import annotations

from pathlib import Path

import pydicom
from dciodvfy import dciodvfy_errors
from pydicom.uid import generate_uid
from test_write import ENGINE, MODEL, ct_image, findings

from edgeimg.dicom.sr import write_sr


def _write(sources: list[pydicom.Dataset], out_dir: Path, **options) -> pydicom.Dataset:
    found = findings(sources) if len(sources) == 3 else [{"level": "series", "probability": 0.5}]
    path = write_sr(sources, found, model=MODEL, engine_key=ENGINE, out_dir=out_dir, **options)
    assert dciodvfy_errors(path) == []
    return pydicom.dcmread(path)


def test_a_revised_sr_names_its_predecessor_and_passes_dciodvfy(tmp_path):
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    sources = [ct_image(index, study, series, frame) for index in range(3)]
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
