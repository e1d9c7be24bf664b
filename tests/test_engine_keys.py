"""Pure parts of the engine builder: shape profiles, the engine key, device facts, TensorRT
flags, and the rule that engine/ does not read the plugin registry."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

import edgeimg.engine
from edgeimg import device
from edgeimg.backends.base import BackendUnavailable
from edgeimg.backends.onnxruntime import OnnxRuntimeBackend
from edgeimg.backends.openvino import OpenVinoBackend
from edgeimg.backends.tensorrt import TensorRTBackend, builder_flags
from edgeimg.backends.torch import TorchBackend
from edgeimg.engine import build as build_module
from edgeimg.engine import key as key_module
from edgeimg.engine.key import engine_target
from edgeimg.engine.profiles import axis_range, shape_profiles
from tests.test_engine_fakes import FakeImageModel, FakeSeriesModel, fake_specs, write_weights


def test_batch_profile_spans_one_to_max_batch(tmp_path):
    image = FakeImageModel(fake_specs(tmp_path)[0])
    assert shape_profiles(image, 4) == {"image": ((1, 1, 16, 16), (4, 1, 16, 16), (4, 1, 16, 16))}
    with pytest.raises(ValueError):
        shape_profiles(image, 0)


def test_sequence_profile_spans_the_spec_length_range(tmp_path):
    series = FakeSeriesModel(fake_specs(tmp_path)[1])
    assert axis_range("length", series.spec, 8) == (2, 7, 12)
    assert shape_profiles(series, 2)["series"] == ((1, 2, 6), (2, 7, 6), (2, 12, 6))


@pytest.fixture
def image_spec(tmp_path):
    spec = fake_specs(tmp_path)[0]
    write_weights(spec)
    return spec


def test_the_key_changes_with_everything_that_makes_an_engine_valid(
    image_spec, tmp_path, monkeypatch
):
    ort = OnnxRuntimeBackend()
    key = engine_target(image_spec, ort, "fp32").key
    assert key == engine_target(image_spec, ort, "fp32").key and len(key) == 16
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "a.dcm").write_bytes(b"one")
    changed = {
        "precision": engine_target(image_spec, ort, "int8").key,
        "profiles": engine_target(image_spec, ort, "fp32", max_batch=4).key,
        "backend": engine_target(image_spec, TorchBackend(), "fp32").key,
        "model version": engine_target(replace(image_spec, version="1.1"), ort, "fp32").key,
        "graph (opset)": _patched(monkeypatch, key_module, "OPSET", 18, image_spec, ort),
        "export code": _patched(monkeypatch, key_module, "EXPORT_VERSION", 99, image_spec, ort),
    }
    monkeypatch.setattr(OnnxRuntimeBackend, "version", lambda self: "99.0")
    changed["backend version"] = engine_target(image_spec, ort, "fp32").key
    monkeypatch.undo()
    monkeypatch.setattr(OnnxRuntimeBackend, "device", lambda self: {"cpu": "another"})
    changed["device"] = engine_target(image_spec, ort, "fp32").key
    monkeypatch.undo()
    write_weights(image_spec, seed=1)
    changed["weights"] = engine_target(image_spec, ort, "fp32").key
    for what, other in changed.items():
        assert other != key, what
    assert len(set(changed.values())) == len(changed)


def _patched(monkeypatch, module, name, value, spec, backend) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(module, name, value)
        return engine_target(spec, backend, "fp32").key


def test_calibration_is_in_the_key_for_int8_only(image_spec, tmp_path):
    ort = OnnxRuntimeBackend()
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, data in ((first, b"one"), (second, b"two")):
        folder.mkdir()
        (folder / "slice.dcm").write_bytes(data)
    synthetic = engine_target(image_spec, ort, "int8").key
    on_first = engine_target(image_spec, ort, "int8", calib=[first]).key
    on_second = engine_target(image_spec, ort, "int8", calib=[second]).key
    assert len({synthetic, on_first, on_second}) == 3
    assert engine_target(image_spec, ort, "fp32", calib=[first]).key == (
        engine_target(image_spec, ort, "fp32").key
    )


def test_the_key_needs_no_export(image_spec, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("a key must not export")

    monkeypatch.setattr(build_module, "export_onnx", no_export)
    target = engine_target(image_spec, OnnxRuntimeBackend(), "fp32")
    assert target.directory(Path("engines")) == Path("engines") / "fake-image" / target.key


def test_the_gpu_driver_is_in_the_key_of_gpu_backends_only(image_spec, monkeypatch):
    def keys(driver: str) -> dict[str, str]:
        monkeypatch.setattr(device, "nvidia_driver_version", lambda: driver)
        return {
            backend.name: engine_target(image_spec, backend, "fp32").key
            for backend in (
                OnnxRuntimeBackend(),
                OpenVinoBackend(),
                TorchBackend(),
                TensorRTBackend(),
            )
        }

    before, after = keys("550.54.15"), keys("555.42.02")
    assert before["onnxruntime"] == after["onnxruntime"]
    assert before["openvino"] == after["openvino"]
    assert before["torch"] != after["torch"]
    assert before["tensorrt"] != after["tensorrt"]
    assert TensorRTBackend().device()["driver"] == "555.42.02"
    assert "driver" not in OnnxRuntimeBackend().device()


def test_driver_version_read_from_proc(tmp_path, monkeypatch):
    proprietary = tmp_path / "proprietary"
    proprietary.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
        "GCC version:  gcc version 12.2.0\n"
    )
    open_module = tmp_path / "open"
    open_module.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build\n"
    )
    assert device.nvidia_driver_version(proprietary) == "550.54.15"
    assert device.nvidia_driver_version(open_module) == "535.104.05"
    monkeypatch.setattr(device, "_driver_from_nvml", lambda: None)
    monkeypatch.setattr(device, "_driver_from_smi", lambda: None)
    assert device.nvidia_driver_version(tmp_path / "absent") is None


def test_cpu_isa_flags_are_the_ones_engines_depend_on():
    flags = device.cpu_isa_flags()
    assert set(flags) <= device.ENGINE_ISA_FLAGS and flags == sorted(flags)
    assert OnnxRuntimeBackend().device()["isa"] == flags


def test_engine_package_does_not_import_the_plugin_registry():
    """engine/ gets ModelSpec and Backend objects from its callers (one registry lookup per
    command), so nothing in it may import edgeimg.plugins."""
    package = Path(edgeimg.engine.__file__).parent
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("edgeimg.plugins")]
    assert offenders == []


def test_tensorrt_flags_per_precision():
    assert builder_flags("fp32") == ()
    assert builder_flags("fp16") == ("FP16",)
    assert builder_flags("int8") == ("INT8",)
    trt10 = {"FP16", "INT8", "TF32"}
    assert builder_flags("int8", trt10) == ("INT8",)
    assert builder_flags("int8", set()) == ()  # TensorRT 11: QDQ alone sets INT8
    with pytest.raises(BackendUnavailable, match="FP16"):
        builder_flags("fp16", set())
