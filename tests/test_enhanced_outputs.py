"""Multi-frame (enhanced) sources through every writer: geometry from the functional groups,
references per frame, and objects that dciodvfy and highdicom's readers accept.

The sources are `edgeimg synth --enhanced` (a true Enhanced CT Image) and highdicom's Legacy
Converted Enhanced CT made from a synthetic single-frame series (one another project wrote).
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from dciodvfy import dciodvfy_errors
from pydicom.pixels import apply_modality_lut

from edgeimg.cli import cli
from edgeimg.synth.dicom import write_study
from tests.enhanced import write_legacy_enhanced

SLICES = 6


@pytest.fixture(scope="module", params=["synth", "legacy"])
def legacy(request, tmp_path_factory) -> Path:
    """One enhanced CT object of SLICES frames, alone in its folder: `edgeimg synth
    --enhanced`'s Enhanced CT, or highdicom's Legacy Converted Enhanced CT."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "legacy":
        return write_legacy_enhanced(root, slices=SLICES, size=64)
    write_study(root, series=1, slices=SLICES, size=64, seed=5, enhanced=True)
    return root / "series-001"


def _source(folder: Path) -> pydicom.Dataset:
    (path,) = folder.glob("*.dcm")
    return pydicom.dcmread(path)


def _run(model: str, inputs: Path, engines: Path, out: Path) -> dict:
    args = ["run", model, str(inputs), "--out", str(out), "--engines-dir", str(engines), "--json"]
    done = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


@pytest.mark.parametrize("model", ["cnn", "detector", "unet", "autoencoder"])
def test_every_writer_makes_a_valid_object_from_an_enhanced_source(
    model, legacy, engines, tmp_path
):
    summary = _run(model, legacy, engines, tmp_path)
    assert summary["counts"]["ok"] == 1 and summary["images"] == SLICES
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    (row,) = [row for row in rows if row["status"] == "ok"]  # beside it: the synth's masks.npz
    assert len(row["results"]) == SLICES
    (path,) = map(Path, row["outputs"])
    assert dciodvfy_errors(path) == []
    written = pydicom.dcmread(path)
    if written.Modality == "SR":
        hd.sr.srread(path)
    elif written.Modality == "SEG":
        seg = hd.seg.segread(path)
        assert seg.FrameOfReferenceUID == _source(legacy).FrameOfReferenceUID
    else:
        assert int(written.NumberOfFrames) == SLICES


def test_sr_findings_name_their_frame(legacy, engines, tmp_path):
    summary = _run("cnn", legacy, engines, tmp_path)
    (path,) = Path(summary["out"]).glob("*.dcm")
    source = _source(legacy)
    references = []
    for item in _walk(pydicom.dcmread(path)):
        if item.get("ValueType") == "IMAGE":
            (ref,) = item.ReferencedSOPSequence
            assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
            references.append(int(ref.ReferencedFrameNumber))
    assert references and set(references) <= set(range(1, SLICES + 1))


def test_derived_frames_keep_each_frames_hu(legacy, engines, tmp_path):
    """Stored values map back through the frame's own rescale to what the model made."""
    summary = _run("autoencoder", legacy, engines, tmp_path)
    (path,) = Path(summary["out"]).glob("*.dcm")
    derived = pydicom.dcmread(path)
    hu = apply_modality_lut(derived.pixel_array, derived)
    assert hu.shape == (SLICES, 64, 64) and np.isfinite(hu).all()
    frames = derived.PerFrameFunctionalGroupsSequence
    sources = [item.DerivationImageSequence[0].SourceImageSequence[0] for item in frames]
    assert [int(ref.ReferencedFrameNumber) for ref in sources] == list(range(1, SLICES + 1))
    assert derived.ImageType[0] == "DERIVED"


def _walk(ds: pydicom.Dataset):
    for item in ds.get("ContentSequence") or []:
        yield item
        yield from _walk(item)
