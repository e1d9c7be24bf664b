"""The output gate: good objects pass, each kind of broken object is refused by name, and a
refused object is never written (so it can never be forwarded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from dciodvfy import dciodvfy_errors
from pydicom.dataset import Dataset

from edgeimg.dicom import write
from edgeimg.dicom.output_gate import GateRefused, check_output, problems_of
from tests.test_write import KINDS, run, sources  # noqa: F401 - the fixture


def _written(kind: str, images: list[Dataset], tmp_path: Path) -> Dataset:
    return pydicom.dcmread(run(kind, images, tmp_path)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_good_outputs_pass(kind, sources, tmp_path):  # noqa: F811
    ds = _written(kind, sources, tmp_path)
    assert list(problems_of(ds, sources)) == []


def _shared_measures(ds: Dataset) -> Dataset:
    return ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


def _first_reference(ds: Dataset) -> Dataset:
    from edgeimg.dicom.output_gate import _referencing_items

    return next(iter(_referencing_items(ds)))


#: (kind, what is broken, how, the problem the gate must name)
BROKEN: list[tuple[str, str, Callable[[Dataset], None], str]] = [
    (
        "seg",
        "type 1 absent",
        lambda ds: delattr(ds, "SegmentSequence"),
        "SegmentSequence (Type 1) is missing",
    ),
    (
        "seg",
        "type 1 empty",
        lambda ds: setattr(ds, "ContentLabel", None),
        "ContentLabel (Type 1) is empty",
    ),
    ("sr", "type 2 absent", lambda ds: delattr(ds, "PatientID"), "PatientID (Type 2) is missing"),
    (
        "seg",
        "slice thickness",
        lambda ds: delattr(_shared_measures(ds), "SliceThickness"),
        "SliceThickness (Type 1) is missing",
    ),
    (
        "seg",
        "plane position",
        lambda ds: delattr(ds.PerFrameFunctionalGroupsSequence[1], "PlanePositionSequence"),
        "frame 2 has no PlanePositionSequence",
    ),
    (
        "seg",
        "frame count",
        lambda ds: setattr(ds, "NumberOfFrames", 7),
        "PerFrameFunctionalGroupsSequence has",
    ),
    (
        "derived",
        "orientation",
        lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
        "ImageOrientationPatient is not two orthogonal unit vectors",
    ),
    (
        "derived",
        "pixel spacing",
        lambda ds: setattr(ds, "PixelSpacing", [0, 0.7]),
        "PixelSpacing must be two positive numbers",
    ),
    (
        "derived",
        "pixel data",
        lambda ds: setattr(ds, "PixelData", ds.PixelData[:-100]),
        "PixelData holds",
    ),
    (
        "derived",
        "invalid uid",
        lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.abc"),
        "SeriesInstanceUID is not a valid UID",
    ),
    (
        "sr",
        "unknown reference",
        lambda ds: setattr(_first_reference(ds), "ReferencedSOPInstanceUID", "1.2.3.4"),
        "references instance 1.2.3.4, which is not one of its sources",
    ),
    (
        "sr",
        "frame out of range",
        lambda ds: setattr(_first_reference(ds), "ReferencedFrameNumber", 2),
        "references frame 2 of instance",
    ),
]


@pytest.mark.parametrize("kind, what, breaks, problem", BROKEN, ids=[b[1] for b in BROKEN])
def test_broken_outputs_are_refused_by_name(kind, what, breaks, problem, sources, tmp_path):  # noqa: F811
    ds = _written(kind, sources, tmp_path)
    breaks(ds)
    assert any(problem in found for found in problems_of(ds, sources)), what
    with pytest.raises(GateRefused, match="refused: "):
        check_output(ds, sources)


@pytest.mark.parametrize("what", ["slice thickness", "type 1 absent", "orientation"])
def test_what_the_gate_refuses_dciodvfy_rejects_too(what, sources, tmp_path):  # noqa: F811
    """The gate's rules are dciodvfy's, for the attributes they share."""
    kind, _, breaks, _ = next(case for case in BROKEN if case[1] == what)
    ds = _written(kind, sources, tmp_path / "good")
    breaks(ds)
    path = tmp_path / "broken.dcm"
    ds.save_as(path)
    assert dciodvfy_errors(path), what


def test_a_refused_object_is_never_written(sources, tmp_path, monkeypatch):  # noqa: F811
    """The listener forwards what lies in the output folder: a refused SEG must not be there."""
    real = write.check_output

    def without_thickness(ds, sources):
        if "SharedFunctionalGroupsSequence" in ds:
            del _shared_measures(ds).SliceThickness
        real(ds, sources)

    monkeypatch.setattr(write, "check_output", without_thickness)
    with pytest.raises(GateRefused, match="SliceThickness"):
        run("seg", sources, tmp_path)
    assert list(tmp_path.iterdir()) == []
