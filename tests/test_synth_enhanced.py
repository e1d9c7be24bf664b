"""`edgeimg synth --enhanced` and the Legacy Converted helper: valid objects, read back right."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage

from edgeimg.commands.synth import synth
from edgeimg.dicom.read import DicomInputError, read_header, read_image
from edgeimg.dicom.series import group_series
from edgeimg.synth.dicom import write_study
from edgeimg.synth.enhanced import ENHANCED_FILE, legacy_converted
from tests.dciodvfy import dciodvfy_errors

SLICES, SIZE = 6, 64
GEOMETRY = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness")


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[Path, Path]:
    """The same phantoms written both ways: single-frame slices and Enhanced CT."""
    single, enhanced = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("enhanced")
    write_study(single, series=2, slices=SLICES, size=SIZE, seed=5)
    write_study(enhanced, series=2, slices=SLICES, size=SIZE, seed=5, enhanced=True)
    return single, enhanced


def _slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("slice-*.dcm"))


def test_cli_writes_one_enhanced_file_per_series(tmp_path):
    done = CliRunner().invoke(
        synth,
        [str(tmp_path / "o"), "--enhanced", "--series", "2", "--slices", "4", "--size", "32"]
        + ["--low-dose", "--json"],
    )
    assert done.exit_code == 0, done.output
    info = json.loads(done.stdout)
    assert info["files"] == 4
    written = sorted(p.relative_to(tmp_path / "o") for p in (tmp_path / "o").rglob("*.dcm"))
    assert [str(p) for p in written] == [
        f"series-00{n}{low}/{ENHANCED_FILE}" for n in (1, 2) for low in ("", "-lowdose")
    ]


def test_enhanced_object_is_valid_enhanced_ct(studies):
    path = studies[1] / "series-001" / ENHANCED_FILE
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == EnhancedCTImageStorage and int(ds.NumberOfFrames) == SLICES
    assert not [keyword for keyword in GEOMETRY if keyword in ds]
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert shared.PixelMeasuresSequence[0].SliceThickness > 0
    assert shared.PixelValueTransformationSequence[0].RescaleIntercept == -1024
    frames = ds.PerFrameFunctionalGroupsSequence
    assert [list(f.FrameContentSequence[0].DimensionIndexValues) for f in frames] == [
        [1, k + 1] for k in range(SLICES)
    ]
    assert len(ds.DimensionIndexSequence) == 2


def test_enhanced_reads_like_the_single_frame_series(studies):
    single, enhanced = studies
    image = read_image(enhanced / "series-001" / ENHANCED_FILE)
    slices = [read_image(path) for path in _slices(single / "series-001")]
    assert image.frames.shape == (SLICES, SIZE, SIZE)
    assert np.array_equal(image.frames, np.concatenate([s.frames for s in slices]))
    assert image.frames.min() < -900, "the per-frame rescale (HU) was not applied"
    assert image.frame_positions == tuple(s.position for s in slices)
    assert image.pixel_spacing == slices[0].pixel_spacing
    assert image.orientation == slices[0].orientation


def test_ground_truth_names_frames(studies):
    truth = json.loads((studies[1] / "ground_truth.json").read_text())
    entries = truth["series"][0]["slices"]
    assert [e["frame"] for e in entries] == list(range(1, SLICES + 1))
    assert {e["file"] for e in entries} == {f"series-001/{ENHANCED_FILE}"}
    single = json.loads((studies[0] / "ground_truth.json").read_text())["series"][0]["slices"]
    assert [e["label"] for e in entries] == [e["label"] for e in single]


def test_enhanced_series_are_checked_frame_by_frame(studies, tmp_path):
    (series,) = group_series([read_header(studies[1] / "series-002" / ENHANCED_FILE)])
    assert series.complete and series.issues == [] and series.slice_spacing is not None
    gapped = tmp_path / "gapped"
    write_study(gapped, series=1, slices=12, size=32, seed=5, gaps=True, enhanced=True)
    (series,) = group_series([read_header(gapped / "series-001" / ENHANCED_FILE)])
    assert not series.complete
    assert any(issue.startswith("gap:") and "frame" in issue for issue in series.issues)


def test_legacy_converted_reads_like_its_sources(studies, tmp_path):
    paths = _slices(studies[0] / "series-001")
    legacy = legacy_converted(
        [pydicom.dcmread(p) for p in paths],
        "1.2.826.0.1.3680043.10.7.1",
        "1.2.826.0.1.3680043.10.7.2",
    )
    out = tmp_path / "legacy.dcm"
    legacy.save_as(out, enforce_file_format=True)
    assert pydicom.dcmread(out).SOPClassUID == LegacyConvertedEnhancedCTImageStorage
    image = read_image(out)
    sources = [read_image(p) for p in paths]
    assert np.array_equal(image.frames, np.concatenate([s.frames for s in sources]))
    assert image.frame_positions == tuple(s.position for s in sources)
    (series,) = group_series([read_header(out)])
    assert series.complete and series.slice_spacing == pytest.approx(
        abs(sources[1].position[2] - sources[0].position[2])
    )


@pytest.mark.parametrize("keyword", ["RescaleSlope", "RescaleIntercept"])
def test_a_rescale_that_is_not_one_number_is_refused_by_name(studies, keyword):
    """Guessing would shift every HU; the file and the attribute are named instead."""
    path = studies[1] / "series-001" / ENHANCED_FILE
    ds = pydicom.dcmread(path)
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    transform[keyword].value = [1, 2]
    with pytest.raises(DicomInputError, match=rf"^{re.escape(str(path))}: {keyword} .* single"):
        read_image(ds)
    transform[keyword].value = None
    assert read_image(ds).frames.shape == (SLICES, SIZE, SIZE)
