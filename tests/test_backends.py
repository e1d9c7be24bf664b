"""The backends as registered: availability, precisions, the device facts they key engines on."""

from __future__ import annotations

import importlib.util

import pytest

from edgeimg.backends.base import BackendUnavailable, physical_cores
from edgeimg.backends.onnxruntime import session_options
from edgeimg.engine import resolve_backend
from edgeimg.plugins import get_registry

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_default_backends_are_registered_in_priority_order():
    backends = get_registry().backends
    assert {"onnxruntime", "torch", "tensorrt"} <= set(backends)
    ranked = sorted(backends.values(), key=lambda b: -b.priority)
    assert [b.name for b in ranked][:4] == ["tensorrt", "onnxruntime", "openvino", "torch"]


def test_onnxruntime_uses_physical_cores_and_full_optimization(tmp_path):
    import onnxruntime as ort

    options = session_options(tmp_path / "out.onnx")
    assert options.intra_op_num_threads == physical_cores() >= 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.optimized_model_filepath.endswith("out.onnx")


def test_auto_picks_the_best_available_backend():
    expected = "tensorrt" if get_registry().backend("tensorrt").missing() is None else "onnxruntime"
    backends = get_registry().backends
    assert resolve_backend(backends, "auto", "fp32").name == expected
    assert resolve_backend(backends, "auto", "int8").name == expected


def test_precisions_each_backend_refuses():
    registry = get_registry()
    with pytest.raises(BackendUnavailable, match="does not support fp16"):
        registry.backend("onnxruntime").require("fp16")
    torch_backend = registry.backend("torch")
    if torch_backend.device()["gpu"] is None:
        assert "CUDA" in torch_backend.unsupported("fp16")
    with pytest.raises(BackendUnavailable, match="int8"):
        torch_backend.require("int8")


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_missing_is_one_clear_line():
    backend = get_registry().backend("tensorrt")
    with pytest.raises(BackendUnavailable) as caught:
        backend.require("fp32")
    assert "\n" not in str(caught.value) and "TensorRT is not installed" in str(caught.value)
