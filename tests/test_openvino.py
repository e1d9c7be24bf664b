"""The OpenVINO backend: compile, store, open and run each precision this CPU has, on a real
(tiny) model, against torch FP32."""

from __future__ import annotations

import numpy as np
import pytest

from edgeimg.engine.network import implementation, load_network, run_torch
from edgeimg.plugins import get_registry
from tests.test_engine_fakes import build, fakes, load  # noqa: F401

pytest.importorskip("openvino")

from edgeimg.backends.openvino import cpu_capabilities  # noqa: E402

HAS_BF16 = "BF16" in cpu_capabilities()
#: how far each precision may be from torch FP32 on the fake image model (outputs are ~0.1-1)
ATOL = {"fp32": 1e-4, "bf16": 0.05, "int8": 0.1}
PRECISIONS = [
    "fp32",
    pytest.param(
        "bf16",
        marks=pytest.mark.skipif(
            not HAS_BF16,
            reason="this CPU has no BF16 (needs AVX512_BF16 or AMX; OpenVINO does not list BF16)",
        ),
    ),
    "int8",
]


@pytest.mark.usefixtures("fakes")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_compile_open_run_roundtrip(precision):
    built = build("fake-image", "openvino", precision)
    assert built.manifest["engine_file"] == "model.ov.blob"
    assert (built.path / "model.ov.blob").stat().st_size > 0
    assert built.manifest["verification"]["passed"]
    assert built.manifest["onnx_file"] == (
        "model.int8.onnx" if precision == "int8" else "model.onnx"
    )
    spec = get_registry().model("fake-image")
    arrays = implementation(spec).example_inputs(3)  # a batch size the profile did not optimize
    engine = load("fake-image", "openvino", precision)
    assert engine.key == built.key
    (got,) = engine.run(*arrays)
    (want,) = run_torch(load_network(spec)[0], arrays)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL[precision])
    again = build("fake-image", "openvino", precision)
    assert again.cached and again.key == built.key


@pytest.mark.usefixtures("fakes")
def test_sequence_model_with_a_dynamic_length():
    build("fake-series", "openvino", "fp32")
    spec = get_registry().model("fake-series")
    series = np.random.default_rng(5).standard_normal((2, 9, 6)).astype(np.float32)
    (got,) = load("fake-series", "openvino", "fp32").run(series)
    (want,) = run_torch(load_network(spec)[0], (series,))
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.usefixtures("fakes")
def test_the_key_holds_precision_runtime_version_and_cpu():
    backend = get_registry().backend("openvino")
    fp32 = build("fake-image", "openvino", "fp32", verify=False)
    int8 = build("fake-image", "openvino", "int8", verify=False)
    assert fp32.key != int8.key
    ort = build("fake-image", "onnxruntime", "fp32", verify=False)
    assert ort.key != fp32.key
    assert fp32.manifest["backend_version"] == backend.version()
    assert fp32.manifest["device"] == backend.device() and fp32.manifest["device"]["cpu"]


def test_bf16_is_refused_in_one_line_where_the_cpu_lacks_it(monkeypatch):
    backend = get_registry().backend("openvino")
    assert (backend.unsupported("bf16") is None) == HAS_BF16
    monkeypatch.setattr("edgeimg.backends.openvino.cpu_capabilities", lambda: ("FP32", "INT8"))
    assert "no BF16" in backend.unsupported("bf16")
    assert backend.unsupported("fp16").startswith("backend openvino does not support fp16")
