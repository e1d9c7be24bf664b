"""`--precision auto`: the race over every backend x precision, the accuracy gate that refuses
drift, the record in the manifest and what `engines` shows; per-model task tolerances.

The candidates are real engines of a tiny model: besides the default backends, a test plugin
registers (through the real plugin manager) `noisy`, whose output is off by 1.0, and `slow`,
a correct ONNX Runtime engine that sleeps before answering.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from edgeimg import hookimpl
from edgeimg.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeSession
from edgeimg.cli import cli
from edgeimg.engine import EngineError, EngineNotFound, find_engine
from edgeimg.engine.race import MARGIN, choose, find_raced, race
from edgeimg.plugins import get_registry, load_registry, reset_registry
from tests.test_engine_fakes import FakePlugin, build, fake_specs, load, write_weights

SLOW_SECONDS = 0.02


class _SlowRunner(OnnxRuntimeSession):
    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        time.sleep(SLOW_SECONDS)
        return super().run(*arrays)


class SlowBackend(OnnxRuntimeBackend):
    """Correct but slow: it passes the gate and must lose the race."""

    name = "slow"
    precisions = ("fp32",)
    priority = 0

    def open(self, engine_path, spec, manifest):
        return _SlowRunner(engine_path)


class SlowPlugin:
    @hookimpl
    def register_backends(self, register):
        register(SlowBackend())


@pytest.fixture
def racers(tmp_path, monkeypatch):
    specs = fake_specs(tmp_path)
    for spec in specs:
        write_weights(spec)
    extra = [("engine-fakes", FakePlugin(specs)), ("race-fakes", SlowPlugin())]
    reset_registry(load_registry(extra=extra))
    monkeypatch.setenv("EDGEIMG_ENGINES", str(tmp_path / "engines"))
    return tmp_path / "engines"


def _resolved(name: str):
    """The spec and the backends, as a command resolves them before calling the engine."""
    registry = get_registry()
    return registry.model(name), registry.backends


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _entries(record: dict) -> dict[tuple[str, str], dict]:
    return {(c["backend"], c["precision"]): c for c in record["candidates"]}


def test_the_race_keeps_the_fastest_engine_that_passes(racers):
    result = race(*_resolved("fake-image"), seconds=1.0)
    record = result.manifest["race"]
    entries = _entries(record)
    timed = [c for c in record["candidates"] if c.get("ms_per_batch") is not None]
    speeds = [c["ms_per_batch"] for c in timed]
    winner = timed[choose([c["precision"] for c in timed], speeds)]
    assert [c["status"] for c in timed].count("chosen") == 1 and winner["status"] == "chosen"
    assert (result.backend, result.precision) == (winner["backend"], winner["precision"])
    assert record["chosen"]["key"] == result.key == result.path.name
    assert winner["ms_per_batch"] <= min(speeds) * MARGIN
    assert winner["ms_per_batch"] <= entries[("onnxruntime", "fp32")]["ms_per_batch"] * MARGIN
    for precision in ("fp32", "int8"):
        refused = entries[("noisy", precision)]
        assert refused["status"] == "refused" and "drifts mae by" in refused["reason"]
        assert refused["drop"] > refused["tolerance"] == 0.05
    assert entries[("slow", "fp32")]["status"] == "passed"
    assert "the chosen engine's time" in entries[("slow", "fp32")]["reason"]
    for backend, precision in [("onnxruntime", "fp32"), ("torch", "fp32"), ("openvino", "fp32")]:
        assert entries[(backend, precision)]["drop"] <= 0.05
    if get_registry().backend("tensorrt").missing():
        assert entries[("tensorrt", "fp16")]["status"] == "unavailable"
    assert result.manifest["verification"]["passed"]
    spec = get_registry().model("fake-image")
    assert find_engine(spec, get_registry().backend("slow"), "fp32", racers) is not None
    assert find_engine(spec, get_registry().backend("noisy"), "fp32", racers) is None
    backends = get_registry().backends
    assert find_raced(spec, backends, racers)[0] == result.path  # the record names the winner
    assert find_raced(spec, backends, racers, calibration="dicom:other") is None
    assert len(list((racers / "fake-image").glob("race-*.json"))) == 1
    again = build("fake-image", precision="auto")
    assert again.cached and again.key == result.key
    assert load("fake-image", precision="auto").key == result.key


def test_a_runtime_upgrade_runs_the_race_again(racers, monkeypatch):
    first_use = load("fake-image", "onnxruntime", "auto", build=True)  # as run/serve do
    assert first_use.manifest["race"]["scope"] == "onnxruntime"
    spec = get_registry().model("fake-image")
    backends = get_registry().backends
    assert find_raced(spec, backends, racers, "onnxruntime") is not None
    monkeypatch.setattr(OnnxRuntimeBackend, "version", lambda self: "99.0")
    assert find_raced(spec, backends, racers, "onnxruntime") is None


def test_nothing_passing_is_an_error_naming_each_refusal(racers):
    with pytest.raises(
        EngineError,
        match=r"no engine for 'fake-image' passed verification.*"
        r"noisy fp32: .*drifts mae.*noisy int8",
    ):
        race(*_resolved("fake-image"), "noisy", seconds=0.2)
    with pytest.raises(EngineNotFound, match="edgeimg build-engine fake-image --backend noisy"):
        load("fake-image", "noisy", "auto")


def test_cli_build_then_engines_json_shows_the_race(racers):
    built = invoke("build-engine", "fake-image", "--backend", "onnxruntime", "--precision", "auto")
    assert built.exit_code == 0, built.output
    assert "auto: chose onnxruntime" in built.stdout
    listing = json.loads(invoke("engines", "--json").stdout)
    raced = [row for row in listing["engines"] if row["race"]]
    assert len(raced) == 1
    record = raced[0]["race"]
    assert record["chosen"]["precision"] == raced[0]["precision"] in ("fp32", "int8")
    assert {(c["backend"], c["precision"]) for c in record["candidates"]} == {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    }
    assert all(c["ms_per_batch"] > 0 and c["reason"] for c in record["candidates"])
    table = invoke("engines")
    assert table.exit_code == 0 and "auto: chose" in table.stdout


def test_auto_is_the_default_and_cannot_skip_verification(racers, monkeypatch):
    monkeypatch.delenv("EDGEIMG_PRECISION", raising=False)
    refused = invoke("build-engine", "fake-image", "--backend", "noisy")
    assert refused.exit_code == 1
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "passed verification" in refused.stderr
    usage = invoke("build-engine", "fake-image", "--no-verify")
    assert usage.exit_code == 2 and "--no-verify needs an explicit --precision" in usage.stderr


def test_bench_measures_the_auto_engine_beside_onnxruntime_fp32(racers):
    args = ["bench", "fake-image", "--backends", "onnxruntime", "--precisions", "fp32,auto"]
    result = invoke(*args, "--batch", "4", "--seconds", "0.3", "--json")
    assert result.exit_code == 0, result.output
    rows = {(r["backend"], r["precision"]): r for r in json.loads(result.stdout)["results"]}
    assert list(rows) == [("torch", "fp32"), ("onnxruntime", "fp32"), ("auto", "auto")]
    chosen = load("fake-image", precision="auto").manifest
    assert rows[("auto", "auto")]["chosen"] == f"{chosen['backend']} {chosen['precision']}"
    assert rows[("onnxruntime", "fp32")]["ratio_to_onnxruntime_fp32"] == 1.0
    assert rows[("auto", "auto")]["ratio_to_onnxruntime_fp32"] > 0
    table = invoke(*args, "--batch", "4", "--seconds", "0.2")
    assert (
        table.exit_code == 0
        and f"auto is {chosen['backend']} {chosen['precision']}" in table.stdout
    )


def test_reduced_precision_has_to_be_clearly_faster():
    precisions = ["fp32", "int8", "bf16", "int8"]
    assert choose(precisions, [10.0, 9.8, 9.9, 5.0]) == 3  # INT8 twice as fast: it wins
    assert choose(precisions, [10.0, 9.8, 9.9, 9.7]) == 0  # within 5%: FP32 stays
    assert choose(precisions, [10.0, 9.0, 9.3, 9.2]) == 2  # BF16 within 5% of INT8's 9.0
    assert choose(["int8", "fp32"], [1.0, 2.0]) == 0


EXPECTED_TOLERANCES = {
    "cnn": ("auc", 0.005),
    "unet": ("dice", 0.01),
    "detector": ("map50", 0.01),
    "autoencoder": ("psnr", 0.3),
    "gan": ("psnr", 0.3),
    "rnn": ("accuracy", 0.005),
    "lstm": ("accuracy", 0.005),
    "gru": ("accuracy", 0.005),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_TOLERANCES))
def test_each_model_declares_a_task_level_tolerance(name):
    spec = get_registry().model(name)
    assert (spec.metric, spec.tolerance) == EXPECTED_TOLERANCES[name]
    assert spec.higher_is_better
    assert spec.as_dict()["tolerance"] == spec.tolerance
