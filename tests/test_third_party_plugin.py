"""The example plugin from docs/plugins.md (written by `edgeimg plugin new hello`), built and
installed with pip the normal way."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_edgeimg


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "docs" / "example-plugin"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("EDGEIMG_LOAD_PLUGINS", None)
    env.pop("EDGEIMG_DISABLE_PLUGINS", None)
    return env


def test_installed_plugin_registers_its_model(installed_example):
    done = run_edgeimg("models", "--json", env=installed_example)
    assert done.returncode == 0, done.stderr
    models = {m["name"]: m for m in json.loads(done.stdout)["models"]}
    assert models["hello"]["plugin"] == "edgeimg-hello"
    assert "cnn" in models


def test_installed_plugin_is_listed_with_its_distribution(installed_example):
    plugins = json.loads(run_edgeimg("plugins", "--json", env=installed_example).stdout)
    hello = next(p for p in plugins["plugins"] if p["name"] == "edgeimg-hello")
    assert hello["distribution"] == "edgeimg-hello" and hello["version"] == "0.1.0"
    assert hello["hooks"] == ["register_models"]
    assert hello["sdk_requires"] == ">=1,<2" and hello["sdk"] == "ok"


def test_installed_plugin_network_builds(installed_example):
    code = (
        "import torch\n"
        "from edgeimg.plugins import get_registry\n"
        "spec = get_registry().model('hello')\n"
        "impl = spec.load()(spec)\n"
        "(image,) = impl.example_inputs(3)\n"
        "print(tuple(impl.build()(torch.from_numpy(image)).shape))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=installed_example
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3, 1)"


def test_allow_list_excludes_the_installed_plugin(installed_example):
    env = dict(installed_example, EDGEIMG_LOAD_PLUGINS="edgeimg-cnn")
    models = json.loads(run_edgeimg("models", "--json", env=env).stdout)["models"]
    assert [m["name"] for m in models] == ["cnn"]
