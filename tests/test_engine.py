"""Engines end to end on small real torch models: export, INT8, verify, cache, store, load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeimg.backends.onnxruntime import OnnxRuntimeBackend
from edgeimg.engine import (
    EngineNotFound,
    VerificationFailed,
    store,
)
from edgeimg.engine import build as build_module
from edgeimg.engine.key import engine_target
from edgeimg.engine.network import load_network, run_torch
from edgeimg.plugins import get_registry
from tests.test_engine_fakes import FEATURES, build, fakes, load, write_weights  # noqa: F401

pytestmark = pytest.mark.usefixtures("fakes")


def _build(name: str, precision: str = "fp32", **options):
    return build(name, "onnxruntime", precision, **options)


def test_fp32_round_trip_records_everything_and_reuses_the_cache(tmp_path):
    built = _build("fake-image")
    manifest = json.loads((built.path / "manifest.json").read_text())
    assert built.path.parent == tmp_path / "engines" / "fake-image"
    assert not built.cached and manifest["key"] == built.key == built.path.name
    assert manifest["backend"] == "onnxruntime" and manifest["precision"] == "fp32"
    assert manifest["inputs"] == [{"name": "image", "shape": ["batch", 1, 16, 16]}]
    assert manifest["outputs"] == [{"name": "score", "shape": ["batch", 1]}]
    assert manifest["profiles"]["image"] == [[1, 1, 16, 16], [8, 1, 16, 16], [8, 1, 16, 16]]
    assert {"model.onnx", "model.ort.onnx", "manifest.json"} <= {
        p.name for p in built.path.iterdir()
    }
    assert manifest["verification"]["passed"] and manifest["verification"]["drift"] < 1e-5
    assert len(manifest["weights_sha256"]) == 64 and manifest["device"]["cpu"]

    again = _build("fake-image")
    assert again.cached and again.key == built.key

    engine = load("fake-image", "onnxruntime")
    assert engine.key == built.key and engine.input_names == ["image"]
    spec = get_registry().model("fake-image")
    image = np.random.default_rng(5).random((3, 1, 16, 16), dtype=np.float32)
    (got,) = engine.run(image)
    (want,) = run_torch(load_network(spec)[0], (image,))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_int8_is_a_qdq_graph_within_tolerance():
    built = _build("fake-image", "int8")
    verification = built.manifest["verification"]
    assert verification["passed"] and verification["drift"] <= verification["tolerance"]
    assert built.manifest["onnx_file"] == "model.int8.onnx"
    ops = {
        node.op_type for node in __import__("onnx").load(built.path / "model.int8.onnx").graph.node
    }
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert built.manifest["calibration"]["source"].startswith("synthetic:")


def _calibration_folder(folder: Path) -> Path:
    """Three small CT files (without a file meta's usual companions) and a note beside them."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    for index in range(3):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.Rows, ds.Columns = "CT", 32, 32
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        pixels = np.random.default_rng(index).integers(800, 1300, (32, 32)).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_int8_calibrates_on_dicom(tmp_path):
    folder = _calibration_folder(tmp_path / "calib")
    built = _build("fake-image", "int8", calib=[folder])
    assert built.manifest["calibration"]["source"].startswith("dicom:")
    assert built.manifest["verification"]["calibration_max_abs_diff"] is not None
    assert built.key != _build("fake-image", "int8").key


def test_dicom_calibration_sees_what_run_feeds_the_engine(tmp_path):
    """Calibration ranges set on inputs preprocessed another way would not fit real input:
    the calibration slices are the pipeline's own decoded inputs, bit for bit (the files lack
    Study and Series UIDs, which calibration does not need)."""
    from edgeimg.dicom.read import DicomInputError
    from edgeimg.engine.calibration import dicom_inputs
    from edgeimg.pipeline import decode_file

    folder = _calibration_folder(tmp_path / "calib")
    spec = get_registry().model("fake-image")
    files = sorted(folder.glob("*.dcm"))
    with pytest.raises(DicomInputError):
        decode_file(files[0], spec)  # run and serve refuse a file they could not file
    want = np.concatenate([decode_file(path, spec, require_uids=False).inputs for path in files])
    got = dicom_inputs([folder], spec)
    assert got.shape == (3, 1, 16, 16)
    np.testing.assert_array_equal(got, want)


def test_precision_and_weights_changes_make_new_keys(fakes):  # noqa: F811
    fp32 = _build("fake-image")
    int8 = _build("fake-image", "int8")
    assert fp32.key != int8.key
    write_weights(fakes["fake-image"], seed=1)
    retrained = _build("fake-image")
    assert not retrained.cached and retrained.key != fp32.key
    assert load("fake-image", "onnxruntime").key == retrained.key


def test_dynamic_sequence_length():
    built = _build("fake-series")
    assert built.manifest["inputs"][0]["shape"] == ["batch", "length", FEATURES]
    assert built.manifest["profiles"]["series"] == [
        [1, 2, FEATURES],
        [8, 7, FEATURES],
        [8, 12, FEATURES],
    ]
    engine = load("fake-series", "onnxruntime")
    network = load_network(get_registry().model("fake-series"))[0]
    for batch, length in ((1, 2), (3, 11)):
        series = np.random.default_rng(length).standard_normal((batch, length, FEATURES))
        series = series.astype(np.float32)
        (got,) = engine.run(series)
        np.testing.assert_allclose(got, run_torch(network, (series,))[0], atol=1e-5)


def test_a_wrong_engine_is_refused_and_nothing_is_stored(tmp_path):
    with pytest.raises(VerificationFailed, match=r"drifts mae by \d+\.\d{4} .*tolerance 0\.05"):
        build("fake-image", "noisy", "fp32")
    assert list(store.engine_dirs(tmp_path / "engines")) == []


def test_no_verify_says_so_and_verify_later_rebuilds():
    unverified = _build("fake-image", verify=False)
    assert unverified.manifest["verification"] == {
        "verified": False,
        "reason": "skipped with --no-verify",
    }
    with pytest.raises(EngineNotFound, match="edgeimg build-engine fake-image"):
        load("fake-image", "onnxruntime")
    verified = _build("fake-image")
    assert not verified.cached and verified.manifest["verification"]["verified"]


def test_a_failure_mid_build_leaves_no_engine_directory(tmp_path, monkeypatch):
    def explode(self, job):
        (job.out_dir / "model.ort.onnx").write_bytes(b"half written")
        raise RuntimeError("power cut")

    monkeypatch.setattr(OnnxRuntimeBackend, "compile", explode)
    with pytest.raises(RuntimeError, match="power cut"):
        _build("fake-image")
    model_dir = tmp_path / "engines" / "fake-image"
    assert list(model_dir.iterdir()) == []


def test_force_replaces_an_engine_atomically():
    first = _build("fake-image")
    forced = _build("fake-image", force=True)
    assert forced.key == first.key and not forced.cached
    assert [p.name for p in forced.path.parent.iterdir()] == [first.key]


def test_load_engine_says_how_to_build_and_can_build(tmp_path):
    with pytest.raises(EngineNotFound) as caught:
        load("fake-image", "onnxruntime", "int8")
    assert "edgeimg build-engine fake-image --backend onnxruntime --precision int8" in str(
        caught.value
    )
    engine = load("fake-image", "onnxruntime", "int8", build=True)
    assert engine.manifest["precision"] == "int8"


def test_torch_backend_engine_runs_the_reference():
    built = build("fake-image", "torch", "fp32")
    assert built.manifest["engine_file"] == "weights.safetensors"
    engine = load("fake-image", "torch")
    image = np.ones((2, 1, 16, 16), np.float32)
    network = load_network(get_registry().model("fake-image"))[0]
    torch.set_num_threads(1)
    np.testing.assert_allclose(engine.run(image)[0], run_torch(network, (image,))[0], atol=1e-6)


def test_a_tampered_engine_is_not_loaded(tmp_path):
    built = _build("fake-image")
    (built.path / "model.ort.onnx").write_bytes(b"tampered")
    assert store.check(built.path) == ["model.ort.onnx does not match its sha256"]
    with pytest.raises(EngineNotFound):
        load("fake-image", "onnxruntime")
    assert not _build("fake-image").cached


def test_renamed_engine_directory_fails_its_key_check(tmp_path):
    built = _build("fake-image")
    moved = built.path.with_name("0" * 16)
    Path(built.path).rename(moved)
    assert "the manifest does not hash to the directory's key" in store.check(moved)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_builds_and_runs_where_present(precision):
    backend = get_registry().backend("tensorrt")
    if backend.missing():
        pytest.skip(f"needs TensorRT on an NVIDIA GPU: {backend.missing()}")
    built = build("fake-series", "tensorrt", precision)
    assert built.manifest["verification"]["passed"]
    assert (built.path / "model.plan").is_file() and (built.path / "timing.cache").is_file()
    engine = load("fake-series", "tensorrt", precision)
    series = np.zeros((3, 9, FEATURES), np.float32)
    assert engine.run(series)[0].shape == (3, 1)


def _target(name: str, precision: str = "fp32", **options):
    registry = get_registry()
    backend = registry.backend("onnxruntime")
    return engine_target(registry.model(name), backend, precision, **options)


def test_the_key_is_known_before_export_and_names_the_built_directory(tmp_path):
    before = _target("fake-image").key
    built = _build("fake-image")
    assert built.key == before == built.path.name == built.manifest["key"]
    assert built.path == tmp_path / "engines" / "fake-image" / before
    assert _target("fake-image").key == before


def test_a_cached_engine_is_found_without_exporting(monkeypatch):
    _build("fake-image")

    def no_export(*args, **kwargs):
        raise AssertionError("a cached engine must not export")

    monkeypatch.setattr(build_module, "export_onnx", no_export)
    assert _build("fake-image").cached
    assert load("fake-image", "onnxruntime").key == _target("fake-image").key


def test_load_opens_only_the_directory_its_key_names(tmp_path):
    """A decoy with a manifest that matches every field the old scan compared (model, version,
    weights, backend, version, precision, device) but another calibration or shape profile, and
    newer than anything else, is not used: the lookup is the key's directory or nothing."""
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "not-an-image.dcm").write_bytes(b"no pixels here")
    root = tmp_path / "engines" / "fake-image"
    narrow = _build("fake-image", max_batch=4)
    assert narrow.manifest["profiles"]["image"][2][0] == 4
    with pytest.raises(EngineNotFound, match="build-engine fake-image --backend onnxruntime"):
        load("fake-image", "onnxruntime")
    assert load("fake-image", "onnxruntime", max_batch=4).key == narrow.key
    synthetic_int8 = _build("fake-image", "int8")
    decoy = root / ("f" * 16)
    shutil.copytree(synthetic_int8.path, decoy)
    manifest = json.loads((decoy / "manifest.json").read_text())
    manifest["built_at"] = "2999-01-01T00:00:00+00:00"
    (decoy / "manifest.json").write_text(json.dumps(manifest))
    assert load("fake-image", "onnxruntime", "int8").key == synthetic_int8.key
    dicom_key = _target("fake-image", "int8", calib=[calib]).key
    assert dicom_key != synthetic_int8.key and not (root / dicom_key).exists()
    with pytest.raises(EngineNotFound):
        load("fake-image", "onnxruntime", "int8", calib=[calib])


def test_changing_profiles_or_calibration_changes_the_key(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "a.dcm").write_bytes(b"a")
    keys = {
        _target("fake-image").key,
        _target("fake-image", max_batch=16).key,
        _target("fake-image", "int8").key,
        _target("fake-image", "int8", calib=[calib]).key,
    }
    assert len(keys) == 4
    assert _target("fake-series", max_batch=2).key != _target("fake-series").key


def test_an_engine_of_the_old_layout_is_stale_and_rebuilt(tmp_path):
    built = _build("fake-image")
    old = built.path.with_name("0123456789abcdef")
    shutil.copytree(built.path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["key_inputs"] = {"onnx_sha256": "a" * 64, "calibration": None}  # before #18
    (old / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(built.path)
    assert "stale" in store.check(old)[0]
    rebuilt = _build("fake-image")
    assert not rebuilt.cached and rebuilt.key == built.key
    assert load("fake-image", "onnxruntime").key == built.key
