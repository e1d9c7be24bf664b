"""Pure parts of the engine builder: shape profiles, cache keys, TensorRT flags."""

from __future__ import annotations

import pytest

from edgeimg.backends.base import BackendUnavailable
from edgeimg.backends.tensorrt import builder_flags
from edgeimg.engine.profiles import axis_range, shape_profiles
from edgeimg.engine.store import cache_key
from tests.test_engine_fakes import FakeImageModel, FakeSeriesModel, fake_specs


def test_batch_profile_spans_one_to_max_batch(tmp_path):
    image = FakeImageModel(fake_specs(tmp_path)[0])
    assert shape_profiles(image, 4) == {"image": ((1, 1, 16, 16), (4, 1, 16, 16), (4, 1, 16, 16))}
    with pytest.raises(ValueError):
        shape_profiles(image, 0)


def test_sequence_profile_spans_the_spec_length_range(tmp_path):
    series = FakeSeriesModel(fake_specs(tmp_path)[1])
    assert axis_range("length", series.spec, 8) == (2, 7, 12)
    assert shape_profiles(series, 2)["series"] == ((1, 2, 6), (2, 7, 6), (2, 12, 6))


def test_cache_key_changes_with_everything_that_makes_an_engine_valid():
    base = dict(
        onnx_sha256="a" * 64,
        backend="onnxruntime",
        backend_version="1.32.0",
        precision="fp32",
        profiles={"image": ((1, 1, 8, 8), (8, 1, 8, 8), (8, 1, 8, 8))},
        device={"cpu": "AMD EPYC", "jetpack": None},
    )
    key = cache_key(**base)
    assert key == cache_key(**base) and len(key) == 16
    changes = {
        "onnx_sha256": "b" * 64,
        "backend": "tensorrt",
        "backend_version": "1.33.0",
        "precision": "int8",
        "profiles": {"image": ((1, 1, 8, 8), (16, 1, 8, 8), (16, 1, 8, 8))},
        "device": {"cpu": "AMD EPYC", "jetpack": "R36", "gpu": {"name": "Orin"}},
    }
    for field, value in changes.items():
        assert cache_key(**{**base, field: value}) != key, field
    int8 = {**base, "precision": "int8"}
    assert cache_key(**int8, calibration="dicom:1") != cache_key(**int8, calibration="dicom:2")
    assert cache_key(**base, calibration="dicom:1") == key


def test_tensorrt_flags_per_precision():
    assert builder_flags("fp32") == ()
    assert builder_flags("fp16") == ("FP16",)
    assert builder_flags("int8") == ("INT8",)
    trt10 = {"FP16", "INT8", "TF32"}
    assert builder_flags("int8", trt10) == ("INT8",)
    assert builder_flags("int8", set()) == ()  # TensorRT 11: QDQ alone sets INT8
    with pytest.raises(BackendUnavailable, match="FP16"):
        builder_flags("fp16", set())
