"""`build-engine`, `engines`, `engines verify` and `bench` through click, as a user runs them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeimg.cli import cli
from tests.test_engine_fakes import fakes  # noqa: F401

pytestmark = pytest.mark.usefixtures("fakes")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_build_engine_json_then_cached():
    first = invoke("build-engine", "fake-image", "--backend", "onnxruntime", "--json")
    assert first.exit_code == 0, first.output
    document = json.loads(first.stdout)
    assert set(document) == {
        "model",
        "backend",
        "precision",
        "key",
        "path",
        "cached",
        "verification",
    }
    assert document["cached"] is False and document["verification"]["passed"]
    second = invoke("build-engine", "fake-image", "--backend", "onnxruntime")
    assert second.exit_code == 0 and "cached fake-image fp32 onnxruntime engine" in second.stdout
    assert document["key"] in second.stdout


def test_auto_skips_missing_tensorrt():
    result = invoke("build-engine", "fake-image", "--json", "--no-verify")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backend"] == "onnxruntime"


def test_missing_tensorrt_exits_2_with_one_line():
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    result = invoke("build-engine", "fake-image", "--backend", "tensorrt")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tensorrt" in lines[0].lower() and "not installed" in lines[0]
    assert result.stdout == ""


def test_unsupported_precision_exits_2():
    result = invoke("build-engine", "fake-image", "--backend", "onnxruntime", "--precision", "fp16")
    assert result.exit_code == 2
    assert "does not support fp16" in result.stderr


def test_refused_engine_exits_1_saying_by_how_much():
    result = invoke("build-engine", "fake-image", "--backend", "noisy")
    assert result.exit_code == 1
    assert "drifts mae by" in result.stderr and "tolerance 0.05" in result.stderr


def test_no_weights_exits_1(fakes):  # noqa: F811
    fakes["fake-image"].weights_path().unlink()
    result = invoke("build-engine", "fake-image")
    assert result.exit_code == 1 and "edgeimg train fake-image" in result.stderr


def test_engines_listing_and_verify(tmp_path):
    invoke("build-engine", "fake-image", "--backend", "onnxruntime", "--no-verify")
    listing = json.loads(invoke("engines", "--json").stdout)
    assert [e["model"] for e in listing["engines"]] == ["fake-image"]
    assert listing["engines"][0]["verification"]["verified"] is False
    assert "fake-image" in invoke("engines").stdout
    ok = invoke("engines", "verify", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    engine_dir = next((tmp_path / "engines" / "fake-image").iterdir())
    (engine_dir / "model.onnx").write_bytes(b"corrupt")
    bad = invoke("engines", "verify")
    assert bad.exit_code == 1 and "model.onnx does not match its sha256" in bad.stdout


def test_bench_json_compares_with_torch():
    result = invoke(
        "bench",
        "fake-image",
        "--backends",
        "onnxruntime,tensorrt",
        "--precisions",
        "fp32",
        "--batch",
        "2",
        "--seconds",
        "0.3",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "fake-image" and report["batch"] == 2
    pairs = [(r["backend"], r["precision"]) for r in report["results"]]
    assert pairs == [("torch", "fp32"), ("onnxruntime", "fp32")]
    for row in report["results"]:
        assert {"images_per_s", "p50_ms", "p95_ms", "ratio_to_torch_fp32"} <= set(row)
    assert report["results"][0]["ratio_to_torch_fp32"] == 1.0
    assert [s["backend"] for s in report["skipped"]] == ["tensorrt"]
    table = invoke(
        "bench",
        "fake-image",
        "--backends",
        "onnxruntime",
        "--precisions",
        "fp32",
        "--batch",
        "2",
        "--seconds",
        "0.2",
    )
    assert table.exit_code == 0 and "vs torch fp32" in table.stdout


def test_bench_reports_a_refused_engine_and_measures_the_rest():
    result = invoke(
        "bench",
        "fake-image",
        "--backends",
        "noisy",
        "--precisions",
        "fp32",
        "--batch",
        "2",
        "--seconds",
        "0.2",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["backend"] for r in report["results"]] == ["torch"]
    assert "drifts mae" in report["skipped"][0]["reason"]


def test_an_old_store_lists_as_stale_verifies_and_is_rebuilt(tmp_path):
    first = json.loads(
        invoke("build-engine", "fake-image", "--backend", "onnxruntime", "--json").stdout
    )
    engine_dir = tmp_path / "engines" / "fake-image" / first["key"]
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    manifest["key_inputs"] = {"onnx_sha256": "a" * 64, "calibration": None}  # as before #18
    (engine_dir / "manifest.json").write_text(json.dumps(manifest))
    listing = json.loads(invoke("engines", "--json").stdout)["engines"]
    assert [(row["key"], row["stale"]) for row in listing] == [(first["key"], True)]
    assert "stale" in invoke("engines").stdout
    checked = invoke("engines", "verify")
    assert checked.exit_code == 0 and "stale" in checked.stdout
    again = json.loads(
        invoke("build-engine", "fake-image", "--backend", "onnxruntime", "--json").stdout
    )
    assert again["cached"] is False and again["key"] == first["key"]
    listing = json.loads(invoke("engines", "--json").stdout)["engines"]
    assert [(row["key"], row["stale"]) for row in listing] == [(first["key"], False)]


def test_an_unknown_backend_exits_2_naming_the_known_ones():
    result = invoke("build-engine", "fake-image", "--backend", "nope", "--precision", "fp32")
    assert result.exit_code == 2
    assert "unknown backend 'nope'" in result.stderr and "onnxruntime" in result.stderr
