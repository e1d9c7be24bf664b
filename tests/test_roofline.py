"""The roofline figures the engines benchmark reports: FLOPs counted right, a real peak."""

from __future__ import annotations

import pytest

from benchmarks.roofline import bf16_gemm_gflops, flops_per_image, roofline, sgemm_gflops
from edgeimg.plugins import get_registry


def _conv(size: int, channels_in: int, channels_out: int) -> int:
    return 2 * size * size * channels_out * channels_in * 9


def test_cnn_flops_match_its_architecture() -> None:
    blocks = [(96, 1, 16), (48, 16, 32), (24, 32, 64), (12, 64, 64)]
    expected = sum(_conv(size, cin, cout) + _conv(size, cout, cout) for size, cin, cout in blocks)
    expected += 2 * 128  # the linear head: 128 pooled features to one logit
    assert flops_per_image(get_registry().model("cnn")) == expected


def test_roofline_relates_rates_to_the_measured_peak(monkeypatch) -> None:
    assert sgemm_gflops(size=128, seconds=0.2) > 0
    monkeypatch.setattr("benchmarks.roofline.sgemm_gflops", lambda: 100.0)
    results = [
        {"backend": "torch", "precision": "fp32", "images_per_s": 100.0},
        {"backend": "onnxruntime", "precision": "fp32", "images_per_s": 250.0},
        {"backend": "onnxruntime", "precision": "int8", "images_per_s": 500.0},
    ]
    report = roofline(get_registry().model("cnn"), results, bf16_peak=400.0)
    flops = report["mflops_per_image"] * 1e6
    assert report["achieved_gflops"]["onnxruntime fp32"] == pytest.approx(250 * flops / 1e9, 0.01)
    assert "onnxruntime int8" not in report["fraction_of_peak"]
    int8 = report["fraction_of_bf16_peak"]["onnxruntime int8"]
    assert int8 == pytest.approx(500 * flops / 1e9 / 400.0, 0.01)
    assert roofline(get_registry().model("cnn"), results)["fraction_of_bf16_peak"] is None
    assert report["max_ratio_to_torch_fp32_at_peak"] == pytest.approx(1e11 / (100 * flops), 0.01)


def test_bf16_peak_is_measured_where_the_cpu_has_bf16() -> None:
    pytest.importorskip("openvino")
    from edgeimg.backends.openvino import cpu_capabilities

    peak = bf16_gemm_gflops(sizes=(128,), seconds=0.2)
    if "BF16" in cpu_capabilities():
        assert peak is not None and peak > 0
    else:
        assert peak is None
