"""Synthetic CT: phantom content and labels, the noise model, DICOM output and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from edgeimg.commands.synth import MIN_SLICES, synth
from edgeimg.synth import PERSIST_MIN, low_dose, make_phantom, make_slices
from edgeimg.synth.anatomy import TISSUE_HU, TISSUE_NAMES
from edgeimg.synth.dicom import write_study
from edgeimg.synth.noise import correlated_noise
from tests.dciodvfy import dciodvfy_errors


def phantom(seed: int, **kwargs):
    return make_phantom(np.random.default_rng(seed), 16, 96, **kwargs)


def longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def test_same_seed_same_phantom_other_seed_differs():
    a, b, c = phantom(7), phantom(7), phantom(8)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.lesion_mask, b.lesion_mask)
    assert a.boxes == b.boxes and np.array_equal(a.positions_z, b.positions_z)
    assert not np.array_equal(a.hu, c.hu)


def test_shapes_and_dtypes():
    p = phantom(1, lesion_probability=1.0)
    assert p.hu.shape == p.lesion_mask.shape == (16, 96, 96)
    assert p.hu.dtype == np.float32 and p.lesion_mask.dtype == np.uint8
    assert p.slice_labels.shape == p.positions_z.shape == (16,) and len(p.boxes) == 16
    with pytest.raises(ValueError):
        make_phantom(np.random.default_rng(0), PERSIST_MIN - 1, 96)


def test_hu_ranges_are_realistic():
    p = phantom(3, lesion_probability=1.0)
    assert np.all(p.hu[:, :3, :3] == -1000.0)
    assert p.hu.min() >= -1000.0 and p.hu.max() > 700.0
    middle = p.hu[p.hu.shape[0] // 2]
    assert np.count_nonzero(middle > 300) > 20
    assert np.count_nonzero((middle > -150) & (middle < -50)) > 100
    assert np.count_nonzero((middle > 20) & (middle < 80)) > 500


def test_lesions_have_their_planned_contrast():
    checked = 0
    for seed in range(6):
        p = phantom(seed, lesion_probability=1.0, decoy_probability=1.0)
        for lesion in p.lesions:
            assert 25.0 <= abs(lesion.delta_hu) <= 120.0
            host = TISSUE_HU[TISSUE_NAMES.index(lesion.host)]
            k = lesion.slices[len(lesion.slices) // 2]
            inside = p.hu[k][p.lesion_ids[k] == lesion.id]
            assert abs(inside.mean() - (host + lesion.delta_hu)) < 15.0
            checked += 1
    assert checked >= 6


@pytest.mark.parametrize("gaps", [False, True])
def test_masks_boxes_and_labels_agree(gaps):
    for seed in range(8):
        p = phantom(seed, lesion_probability=0.7, decoy_probability=0.7, gaps=gaps)
        assert np.array_equal(p.slice_labels, p.lesion_mask.any(axis=(1, 2)))
        assert p.lesion_present == bool(p.slice_labels.any())
        for k, boxes in enumerate(p.boxes):
            assert bool(boxes) == p.slice_labels[k]
            covered = np.zeros_like(p.lesion_mask[k])
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
                assert p.lesion_mask[k, y0:y1, x0:x1].any()
                covered[y0:y1, x0:x1] = 1
            assert not np.any(p.lesion_mask[k] & (covered == 0))


def test_decoys_never_make_a_series_persistent():
    present = 0
    for seed in range(20):
        p = phantom(seed, lesion_probability=0.0, decoy_probability=1.0, gaps=seed % 2 == 0)
        assert not p.persistent
        assert longest_run(p.slice_labels) < PERSIST_MIN
        assert all(lesion.decoy and lesion.run <= 2 for lesion in p.lesions)
        present += p.lesion_present
    assert present >= 15


def test_real_lesions_are_persistent():
    for seed in range(10):
        p = phantom(seed, lesion_probability=1.0, decoy_probability=1.0, gaps=seed % 2 == 0)
        real = [lesion for lesion in p.lesions if not lesion.decoy]
        assert real and p.persistent and p.lesion_present
        assert all(lesion.run >= PERSIST_MIN for lesion in real)


def test_no_lesions_when_both_probabilities_are_zero():
    p = phantom(4, lesion_probability=0.0, decoy_probability=0.0)
    assert not p.lesion_present and not p.persistent and not p.lesion_mask.any()


def test_gaps_leave_jumps_in_z():
    for seed in range(5):
        regular = phantom(seed)
        steps = np.diff(regular.positions_z)
        assert np.allclose(steps, -regular.slice_thickness)
        gapped = phantom(seed, gaps=True)
        steps = -np.diff(gapped.positions_z) / gapped.slice_thickness
        assert len(gapped.positions_z) == 16
        assert steps.max() >= 2 - 1e-6 and steps.min() >= 1 - 1e-6
        assert 16 + 1 <= round(steps.sum()) + 1 <= 16 + 3


def test_make_slices_balanced_batch():
    hu, mask, boxes = make_slices(np.random.default_rng(0), 20, 64)
    assert hu.shape == mask.shape == (20, 64, 64) and len(boxes) == 20
    labels = mask.any(axis=(1, 2))
    assert labels.sum() == 10
    assert [bool(b) for b in boxes] == labels.tolist()
    again = make_slices(np.random.default_rng(0), 20, 64)
    assert np.array_equal(hu, again[0])


def test_noise_grows_as_dose_drops():
    p = phantom(2)
    body = p.hu > -500
    stds = [
        float((low_dose(p.hu, np.random.default_rng(0), dose) - p.hu)[body].std())
        for dose in (1.0, 0.5, 0.25, 0.1)
    ]
    assert stds == sorted(stds)
    assert stds[2] / stds[1] == pytest.approx(np.sqrt(2), rel=0.05)


def test_noise_grows_with_body_size():
    yy, xx = np.mgrid[:128, :128] - 63.5
    small = np.where(np.hypot(xx, yy) < 30, 0.0, -1000.0).astype(np.float32)
    large = np.where(np.hypot(xx, yy) < 60, 0.0, -1000.0).astype(np.float32)
    centre = np.hypot(xx, yy) < 10

    def centre_std(hu):
        return float((low_dose(hu, np.random.default_rng(1)) - hu)[centre].std())

    assert centre_std(large) > 1.5 * centre_std(small)


def test_noise_is_correlated_unit_variance_and_deterministic():
    noise = correlated_noise(np.random.default_rng(0), (8, 64, 64), 0.78)
    assert noise.std() == pytest.approx(1.0, rel=0.05)
    neighbour = np.corrcoef(noise[..., :-1].ravel(), noise[..., 1:].ravel())[0, 1]
    assert 0.2 < neighbour < 0.7
    p = phantom(0)
    first = low_dose(p.hu, np.random.default_rng(5))
    assert np.array_equal(first, low_dose(p.hu, np.random.default_rng(5)))
    with pytest.raises(ValueError):
        low_dose(p.hu, np.random.default_rng(5), dose_fraction=0.0)


def test_array_api_needs_neither_torch_nor_pydicom():
    code = (
        "import sys, numpy as np, edgeimg.synth as s; "
        "s.make_phantom(np.random.default_rng(0), 4, 32); "
        "assert not {'torch', 'pydicom'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    info = write_study(out, series=2, slices=4, size=48, seed=11, pairs=True)
    return out, info


def test_study_layout_and_ground_truth(study):
    out, info = study
    assert info.files == 16
    folders = [s.folder for s in info.series]
    assert folders == ["series-001", "series-001-lowdose", "series-002", "series-002-lowdose"]
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["study_uid"] == info.study_uid and truth["persist_min"] == PERSIST_MIN
    uids = set()
    for series in truth["series"]:
        mask = np.load(out / series["mask"])["mask"]
        assert mask.shape == (4, 48, 48) and mask.dtype == np.uint8
        labels = [entry["label"] for entry in series["slices"]]
        assert labels == mask.any(axis=(1, 2)).tolist()
        for entry in series["slices"]:
            ds = pydicom.dcmread(out / entry["file"])
            assert ds.SOPInstanceUID == entry["sop_instance_uid"]
            assert ds.SeriesInstanceUID == series["series_uid"]
            assert bool(entry["boxes"]) == entry["label"]
            uids.add(entry["sop_instance_uid"])
    assert len(uids) == 16
    low = truth["series"][1]
    assert low["low_dose"] and low["source_series_uid"] == truth["series"][0]["series_uid"]


def test_written_files_read_back_as_hu(study):
    out, _ = study
    clean = make_phantom(np.random.default_rng([11, 1]), 4, 48)
    for k in range(4):
        ds = pydicom.dcmread(out / f"series-001/slice-{k + 1:04d}.dcm")
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "CT" and ds.SOPClassUID == pydicom.uid.CTImageStorage
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(hu, np.clip(np.rint(clean.hu[k]), -1024, 3071))
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(clean.positions_z[k])
        noisy = pydicom.dcmread(out / f"series-001-lowdose/slice-{k + 1:04d}.dcm")
        difference = noisy.pixel_array.astype(float) - ds.pixel_array
        assert 5.0 < difference[clean.hu[k] > -500].std() < 100.0
        assert noisy.FrameOfReferenceUID == ds.FrameOfReferenceUID
        assert noisy.SeriesInstanceUID != ds.SeriesInstanceUID


def test_written_files_pass_dciodvfy(study):
    out, _ = study
    for path in sorted(out.glob("series-*/slice-*.dcm")):
        assert dciodvfy_errors(path) == [], path


def test_study_is_deterministic(study, tmp_path):
    out, info = study
    again = write_study(tmp_path / "a", series=2, slices=4, size=48, seed=11, pairs=True)
    assert again.study_uid == info.study_uid
    assert [s.series_uid for s in again.series] == [s.series_uid for s in info.series]
    first = (out / "series-002/slice-0003.dcm").read_bytes()
    assert (tmp_path / "a/series-002/slice-0003.dcm").read_bytes() == first
    other = write_study(tmp_path / "b", series=2, slices=4, size=48, seed=12)
    assert other.study_uid != info.study_uid
    assert not {s.series_uid for s in other.series} & {s.series_uid for s in info.series}
    assert other.patient_id != info.patient_id


def test_cli_json(tmp_path):
    out = tmp_path / "out"
    args = [str(out), "--series", "1", "--slices", "4", "--size", "32", "--low-dose", "--json"]
    result = CliRunner().invoke(synth, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["out"] == str(out) and document["files"] == 8
    assert [s["folder"] for s in document["series"]] == ["series-001", "series-001-lowdose"]
    assert len(list(out.glob("series-*/slice-*.dcm"))) == 8


def test_cli_summary(tmp_path):
    result = CliRunner().invoke(synth, [str(tmp_path / "o"), "--series", "1", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "series-001" in result.stdout and "ground_truth.json" in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--size", "16"], ["--slices", "2"], ["--series", "0"], ["--seed", "-1"]],
)
def test_cli_rejects_bad_options(tmp_path, args):
    result = CliRunner().invoke(synth, [str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_cli_rejects_file_and_non_empty_out(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(synth, [str(target), "--size", "32"])
    assert result.exit_code == 2 and "not a directory" in result.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("x")
    args = [str(busy), "--series", "1", "--slices", "4", "--size", "32"]
    result = CliRunner().invoke(synth, args)
    assert result.exit_code == 2 and "--force" in result.output
    assert CliRunner().invoke(synth, [*args, "--force"]).exit_code == 0


def test_cli_minimum_slices_matches_phantom():
    assert MIN_SLICES == PERSIST_MIN
