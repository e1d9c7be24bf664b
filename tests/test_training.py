"""The training loop, checkpoints and the `train` / `evaluate` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner
from edgeimg_cnn.model import CNNModel
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from safetensors import safe_open

from edgeimg.cli import cli
from edgeimg.plugins import get_registry
from edgeimg.sdk.training import WeightsNotFound, evaluate, load_network, train


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small synthetic sets, so each training here takes a second or two."""
    torch.set_num_threads(2)
    monkeypatch.setattr(CNNModel, "train_size", 24)
    monkeypatch.setattr(CNNModel, "val_size", 8)
    monkeypatch.setattr(CNNModel, "heldout_size", 8)
    monkeypatch.setattr(CNNModel, "batch_size", 8)


def _spec():
    return get_registry().model("cnn")


def test_same_seed_same_weights(tmp_path: Path) -> None:
    first = train(_spec(), seed=5, epochs=1, out=tmp_path / "a.safetensors", progress=False)
    second = train(_spec(), seed=5, epochs=1, out=tmp_path / "b.safetensors", progress=False)
    other = train(_spec(), seed=6, epochs=1, out=tmp_path / "c.safetensors", progress=False)
    a, b, c = (load_network(_spec(), r.weights).state_dict() for r in (first, second, other))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_checkpoint_is_safetensors_and_json(tmp_path: Path) -> None:
    result = train(
        _spec(), seed=0, epochs=2, out=tmp_path / "w" / "cnn.safetensors", progress=False
    )
    raw = result.weights.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_length])["__metadata__"]["model"] == "cnn"
    assert b"pickle" not in raw[: 8 + header_length] and not raw.startswith(b"PK")
    with safe_open(str(result.weights), "pt") as handle:
        assert "head.weight" in handle.keys()
    metadata = json.loads(result.metadata.read_text())
    assert result.metadata == tmp_path / "w" / "cnn.json"
    for key in ("model", "version", "seed", "epochs", "data", "training_seconds", "torch_version"):
        assert key in metadata
    assert set(metadata["validation_metrics"]) == {"auc", "accuracy"}
    assert metadata["best_epoch"] in (1, 2)


def test_missing_weights_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match="edgeimg train cnn"):
        load_network(_spec(), tmp_path / "absent.safetensors")


def test_evaluate_reports_model_seed_and_count(tmp_path: Path) -> None:
    result = train(_spec(), seed=0, epochs=1, out=tmp_path / "cnn.safetensors", progress=False)
    report = evaluate(_spec(), weights=result.weights, seed=4)
    assert report["model"] == "cnn" and report["seed"] == 4 and report["n"] == 8
    assert set(report["metrics"]) == {"auc", "accuracy"}


def test_cli_train_then_evaluate_json(tmp_path: Path) -> None:
    runner = CliRunner()
    weights = tmp_path / "cnn.safetensors"
    trained = runner.invoke(cli, ["train", "cnn", "--epochs", "1", "--out", str(weights)])
    assert trained.exit_code == 0, trained.output
    assert weights.is_file() and weights.with_suffix(".json").is_file()
    scored = runner.invoke(
        cli, ["evaluate", "cnn", "--weights", str(weights), "--seed", "3", "--json"]
    )
    assert scored.exit_code == 0, scored.output
    document = json.loads(scored.stdout)
    assert document["model"] == "cnn" and document["seed"] == 3 and document["n"] == 8
    assert 0.0 <= document["metrics"]["auc"] <= 1.0


def test_cli_unknown_model_lists_names() -> None:
    result = CliRunner().invoke(cli, ["evaluate", "nosuchmodel"])
    assert result.exit_code == 2
    assert "nosuchmodel" in result.output and "cnn" in result.output


def test_cli_bad_data_is_a_clean_error(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["train", "cnn", "--data", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    empty = runner.invoke(cli, ["train", "cnn", "--data", str(tmp_path)])
    assert empty.exit_code == 2
    assert "class folders" in empty.output and "Traceback" not in empty.output


def _ct(path: Path, pixels: np.ndarray) -> None:
    """A minimal CT image with a rescale, enough for the class-folder reader."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (pixels + 1024).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_cli_trains_from_class_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("negative", "positive"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for index in range(4):
            image = rng.normal(40, 10, (64, 64))
            if label == "positive":
                image[20:30, 20:30] += 100
            _ct(tmp_path / "data" / label / f"{index}.dcm", image)
    (tmp_path / "data" / "positive" / "notes.txt").write_text("not DICOM")
    weights = tmp_path / "cnn.safetensors"
    result = CliRunner().invoke(
        cli,
        ["train", "cnn", "--data", str(tmp_path / "data"), "--epochs", "1", "--out", str(weights)],
    )
    assert result.exit_code == 0, result.output
    metadata = json.loads(weights.with_suffix(".json").read_text())
    assert metadata["data"]["train"] + metadata["data"]["validation"] == 8
    assert "DICOM folder" in metadata["data"]["source"]


def test_segmentation_folder_matches_seg_to_images(tmp_path: Path) -> None:
    from edgeimg.dicom.seg import write_seg
    from edgeimg.sdk.datasets import segmentation_folder
    from edgeimg.synth.dicom import write_study

    write_study(tmp_path / "study", series=1, slices=6, size=64, seed=3)
    series = tmp_path / "study" / "series-001"
    sources = [pydicom.dcmread(path) for path in sorted(series.glob("*.dcm"))]
    truth = np.load(series / "masks.npz")["mask"].astype(np.uint8)
    assert truth.any()
    spec = get_registry().model("unet")
    write_seg(sources, truth, model=spec, engine_key="test", out_dir=tmp_path / "study" / "seg")
    data = segmentation_folder(tmp_path / "study", spec.input)
    assert data.images.shape == (6, 1, *spec.input.size)
    assert data.masks.shape == (6, *spec.input.size)
    assert data.labels.tolist() == truth.reshape(6, -1).any(axis=1).tolist()
