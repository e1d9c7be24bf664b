"""The plugin SDK: what plugins may import, and the contract errors a plugin author meets.

The failures of issue #19, each with the message a user now gets:
1. build-engine had no way to pass weights: test_build_engine_without_weights_says_to_pass_weights
   (and --weights on run/serve: test_run_without_heldout..., test_serve_weights_name_their_model);
2. train on a plugin without datasets(): test_train_without_datasets_names_method_command_and_base;
3. build-engine/run without heldout(): test_build_engine_without_heldout...,
   test_run_without_heldout...;
4. having to copy a built-in plugin's code:
   test_a_base_class_and_build_is_enough_to_train_and_build;
5. a spec without a metric choosing "best" on minus the training loss:
   test_a_spec_without_metric_keeps_the_lowest_validation_loss;
6. a pyproject without [build-system] or packages: test_scaffold.py (declares_build_system).
Plus SDK version refusal and the import rule for the built-in plugins.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from edgeimg.plugins import load_registry
from tests.conftest import ROOT, run_edgeimg, write_distribution

PLUGIN = """
from edgeimg import sdk

SDK_REQUIRES = {requires!r}


@sdk.hookimpl
def register_models(register):
    register(sdk.ModelSpec(
        name="tiny", version="0.1.0", task="classify", summary="test",
        implementation="tiny_model:{cls}", input=sdk.InputSpec(size=(32, 32)), metric={metric!r},
    ))
"""

MODEL = """
import torch
from edgeimg import sdk


def network():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 1),
    )


class Bare(sdk.ModelImplementation):
    output_names = ("logit",)
    dynamic_axes = {"image": {0: "batch"}, "logit": {0: "batch"}}

    def build(self):
        return network()

    def example_inputs(self, batch=2):
        import numpy as np
        return (np.zeros((batch, 1, 32, 32), np.float32),)


class Tiny(sdk.SliceClassifier):
    train_size, val_size, heldout_size = 48, 24, 24
    batch_size = 16

    def build(self):
        return network()
"""


def install(site_dir, cls: str = "Tiny", metric: str = "", requires: str = ">=1,<2") -> None:
    write_distribution(
        site_dir,
        "edgeimg-tiny",
        "tiny",
        "tiny_plugin",
        PLUGIN.format(cls=cls, metric=metric, requires=requires),
    )
    (site_dir / "tiny_model.py").write_text(MODEL)
    for module in ("tiny_plugin", "tiny_model"):
        sys.modules.pop(module, None)


def weights_file(site_dir, tmp_path):
    import tiny_model
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file(dict(tiny_model.network().state_dict()), str(path))
    return path


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _edgeimg_imports(path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "edgeimg":
                names += [f"edgeimg.{alias.name}" for alias in node.names]
            elif node.module.startswith("edgeimg."):
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.split(".")[0] == "edgeimg"]
    return names


@pytest.mark.parametrize("path", sorted(ROOT.glob("plugins/*/*/*.py")), ids=lambda p: p.name)
def test_built_in_plugins_import_only_the_sdk(path):
    outside = [n for n in _edgeimg_imports(path) if n.split(".")[:2] != ["edgeimg", "sdk"]]
    assert not outside, f"{path.relative_to(ROOT)} imports edgeimg internals: {outside}"


def test_the_scan_catches_an_internal_import(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        "from edgeimg.sdk.slices import SliceModel\nfrom edgeimg import sdk, hookimpl\n"
    )
    assert _edgeimg_imports(path) == ["edgeimg.sdk.slices", "edgeimg.sdk", "edgeimg.hookimpl"]


def test_importing_the_sdk_does_not_import_torch():
    code = "import sys, edgeimg.sdk as s; s.ModelSpec; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_every_sdk_name_resolves():
    from edgeimg import sdk

    missing = [name for name in sdk.__all__ if getattr(sdk, name, None) is None]
    assert not missing


def test_every_task_has_a_base_that_provides_all_but_build():
    from edgeimg import sdk
    from edgeimg.sdk.implementation import provides

    for task, base in sdk.TASK_BASES.items():
        cls = getattr(sdk, base)
        missing = [m for m in sdk.NEEDED_BY if m not in ("build", "target", "read_folder")]
        absent = [m for m in missing if not provides(cls.__new__(cls), m)]
        assert not absent, f"{base} ({task}) lacks {absent}"


def test_build_engine_without_weights_says_to_pass_weights(site_dir, tmp_path):
    install(site_dir)
    done = run_edgeimg("build-engine", "tiny", "--engines-dir", str(tmp_path / "e"))
    assert done.returncode == 1, done.stderr
    assert "ships no weights; pass --weights FILE" in done.stderr
    assert "Traceback" not in done.stderr


def test_weights_must_be_safetensors(site_dir, tmp_path):
    install(site_dir)
    pickle = tmp_path / "tiny.pt"
    pickle.write_bytes(b"\x80\x04K\x01.")
    done = run_edgeimg("build-engine", "tiny", "--weights", str(pickle))
    assert done.returncode == 2
    assert "not a safetensors file" in done.stderr and "Traceback" not in done.stderr


def test_train_without_datasets_names_method_command_and_base(site_dir):
    install(site_dir, cls="Bare")
    line = one_line_error(run_edgeimg("train", "tiny", "--epochs", "1"))
    assert "datasets()" in line and "`edgeimg train` needs it" in line
    assert "edgeimg.sdk.SliceClassifier" in line and "tiny_model:Bare" in line


def test_build_engine_without_heldout_names_method_command_and_base(site_dir, tmp_path):
    install(site_dir, cls="Bare")
    weights = weights_file(site_dir, tmp_path)
    done = run_edgeimg(
        "build-engine",
        "tiny",
        "--weights",
        str(weights),
        "--backend",
        "onnxruntime",
        "--engines-dir",
        str(tmp_path / "engines"),
    )
    line = one_line_error(done)
    assert "heldout()" in line and "`edgeimg build-engine` needs it" in line
    assert "edgeimg.sdk.SliceClassifier" in line


def test_run_without_heldout_names_method_command_and_base(site_dir, tmp_path):
    install(site_dir, cls="Bare")
    weights = weights_file(site_dir, tmp_path)
    study = tmp_path / "study"
    synth = run_edgeimg("synth", str(study), "--series", "1", "--slices", "4", "--size", "32")
    assert synth.returncode == 0, synth.stderr
    done = run_edgeimg(
        "run",
        "tiny",
        str(study),
        "--weights",
        str(weights),
        "--backend",
        "onnxruntime",
        "--engines-dir",
        str(tmp_path / "engines"),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "0",
        "--json",
    )
    line = one_line_error(done)
    assert "heldout()" in line and "`edgeimg run` needs it" in line


def test_serve_weights_name_their_model(site_dir, tmp_path):
    install(site_dir)
    weights = weights_file(site_dir, tmp_path)
    serve = ("serve", "--aet", "EDGE", "--port", "0", "--spool", str(tmp_path / "spool"))
    two = run_edgeimg(*serve, "--model", "tiny", "--model", "cnn", "--weights", str(weights))
    assert two.returncode == 2 and "give NAME=FILE when serving more than one model" in two.stderr
    other = run_edgeimg(*serve, "--model", "tiny", "--weights", f"cnn={weights}")
    assert other.returncode == 2 and "'cnn' is not a served --model" in other.stderr
    assert "Traceback" not in two.stderr + other.stderr


def test_a_base_class_and_build_is_enough_to_train_and_build(site_dir, tmp_path):
    install(site_dir, metric="auc")
    weights = tmp_path / "tiny.safetensors"
    done = run_edgeimg("train", "tiny", "--epochs", "1", "--out", str(weights), "--json")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["metrics"]) == {"auc", "accuracy"}
    done = run_edgeimg(
        "build-engine",
        "tiny",
        "--weights",
        str(weights),
        "--backend",
        "onnxruntime",
        "--engines-dir",
        str(tmp_path / "engines"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    verification = json.loads(done.stdout)["verification"]
    assert verification["verified"] and verification["metric"] == "auc"


def test_a_spec_without_metric_keeps_the_lowest_validation_loss(site_dir, tmp_path):
    from edgeimg.sdk.training import evaluate, train, validation_loss

    install(site_dir)
    spec = load_registry().model("tiny")
    result = train(spec, epochs=3, out=tmp_path / "tiny.safetensors", progress=False)
    losses = [epoch["val_loss"] for epoch in result.history]
    assert all(loss > 0 for loss in losses)
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.metrics["val_loss"] == min(losses)
    implementation = spec.load()(spec)
    from edgeimg.sdk.training import load_network

    network = load_network(spec, result.weights)
    _, validation = implementation.datasets(0)
    assert validation_loss(implementation, network, validation) == pytest.approx(min(losses))
    assert "auc" in evaluate(spec, weights=result.weights)["metrics"]


def test_a_metric_that_metrics_does_not_return_is_a_contract_error(site_dir, tmp_path):
    install(site_dir, metric="dice")
    line = one_line_error(run_edgeimg("train", "tiny", "--epochs", "1", "--limit", "16", "--json"))
    assert "names metric 'dice' but metrics() returns accuracy, auc" in line


def test_plugins_shows_sdk_compatibility(site_dir):
    install(site_dir)
    done = run_edgeimg("plugins", "--json")
    tiny = next(p for p in json.loads(done.stdout)["plugins"] if p["name"] == "tiny")
    assert tiny["sdk_requires"] == ">=1,<2" and tiny["sdk"] == "ok" and tiny["error"] is None
    cnn = next(p for p in json.loads(done.stdout)["plugins"] if p["name"] == "edgeimg-cnn")
    assert cnn["sdk"] == "ok"


def test_a_plugin_for_another_sdk_is_refused_with_one_line(site_dir):
    install(site_dir, requires=">=2,<3")
    registry = load_registry()
    assert "tiny" not in registry.models
    assert registry.plugins["tiny"].sdk == "incompatible"
    done = run_edgeimg("models", "--json")
    assert done.returncode == 0
    warnings = [line for line in done.stderr.splitlines() if "tiny" in line]
    assert len(warnings) == 1
    assert "built for edgeimg SDK >=2,<3, this edgeimg has SDK 1.0" in warnings[0]
    assert "tiny" not in {m["name"] for m in json.loads(done.stdout)["models"]}
