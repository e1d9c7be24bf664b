"""Every core CLI command through click's CliRunner, and the console script as users run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeimg import __version__, hookimpl
from edgeimg.cli import cli
from edgeimg.plugins import load_registry, reset_registry
from tests.conftest import run_edgeimg, write_distribution
from tests.test_plugins import BUILT_IN_MODELS, MODEL_PLUGINS


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_core_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("plugins", "models", "doctor"):
        assert command in result.output


def test_plugins_json_lists_model_plugins_and_backends():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    names = {plugin["name"] for plugin in document["plugins"]}
    assert names == MODEL_PLUGINS
    assert {"onnxruntime", "torch", "tensorrt"} <= {b["name"] for b in document["backends"]}
    tensorrt = next(b for b in document["backends"] if b["name"] == "tensorrt")
    assert tensorrt["available"] is False and "TensorRT" in tensorrt["missing"]


def test_plugins_all_shows_default_plugins():
    document = json.loads(invoke("plugins", "--all", "--json").stdout)
    defaults = {plugin["name"] for plugin in document["plugins"] if plugin["default"]}
    assert "edgeimg.backends.onnxruntime" in defaults


def test_plugins_table():
    result = invoke("plugins", "--all")
    assert result.exit_code == 0
    assert "edgeimg-sequence" in result.output and "onnxruntime" in result.output
    assert "edgeimg[tensorrt]" in result.output


def test_models_json():
    result = invoke("models", "--json")
    models = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert set(models) >= BUILT_IN_MODELS
    assert models["gru"]["task"] == "series-classify"
    assert models["unet"]["plugin"] == "edgeimg-unet"
    assert models["detector"]["plugin"] == "edgeimg-detect"


def test_models_table():
    result = invoke("models")
    assert result.exit_code == 0
    for name in BUILT_IN_MODELS:
        assert name in result.output


def test_doctor_json():
    result = invoke("doctor", "--json")
    assert result.exit_code == 0
    facts = json.loads(result.stdout)
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(facts["packages"]) >= {"torch", "onnxruntime", "tensorrt", "pycuda"}
    assert facts["packages"]["tensorrt"] is None or isinstance(facts["packages"]["tensorrt"], str)
    assert {"storescu", "dciodvfy"} <= set(facts["tools"])
    assert isinstance(facts["cuda_devices"], list)


def test_doctor_table():
    result = invoke("doctor")
    assert result.exit_code == 0
    assert "onnxruntime" in result.output and "JetPack" in result.output


def test_jetpack_release_read(tmp_path):
    from edgeimg.device import jetpack_release

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 3.0, GCID: 1, BOARD: generic\n")
    assert jetpack_release(release).startswith("R36 (release), REVISION: 3.0")
    assert jetpack_release(tmp_path / "absent") is None


def test_plugin_commands_are_added():
    class Greets:
        @hookimpl
        def register_commands(self, cli):
            import click

            @cli.command()
            def greet():
                click.echo("hi from a plugin")

    reset_registry(load_registry(extra=[("greets", Greets())]))
    group = type(cli)(name="edgeimg", commands=dict(cli.commands), callback=cli.callback)
    result = CliRunner().invoke(group, ["greet"])
    assert result.output.strip() == "hi from a plugin"


def test_duplicate_model_is_a_clear_error(site_dir):
    write_distribution(
        site_dir,
        "edgeimg-twin",
        "twin",
        "twin_plugin",
        """
        from edgeimg import hookimpl
        from edgeimg.sdk.model import ModelSpec

        @hookimpl
        def register_models(register):
            register(ModelSpec(name="cnn", version="9", task="classify", summary="a twin",
                               implementation="twin_plugin:X"))
        """,
    )
    done = run_edgeimg("models")
    assert done.returncode == 1
    assert "'edgeimg-cnn'" in done.stderr and "'twin'" in done.stderr
    assert "Traceback" not in done.stderr


def test_broken_plugin_warns_once_and_others_work(site_dir):
    write_distribution(site_dir, "edgeimg-broken", "broken", "broken_plugin", "1/0\n")
    done = run_edgeimg("models", "--json")
    assert done.returncode == 0
    assert BUILT_IN_MODELS <= {m["name"] for m in json.loads(done.stdout)["models"]}
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "broken" in warnings[0] and "ZeroDivisionError" in warnings[0]
    assert "Traceback" not in done.stderr
    listed = json.loads(run_edgeimg("plugins", "--json").stdout)["plugins"]
    broken = next(p for p in listed if p["name"] == "broken")
    assert "ZeroDivisionError" in broken["error"]


@pytest.mark.parametrize(
    "args",
    [["--help"], ["plugins"], ["plugins", "--json"], ["models", "--json"], ["models", "--help"]],
)
def test_listing_commands_do_not_import_torch(args):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from edgeimg.cli import cli\n"
        f"result = CliRunner().invoke(cli, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"
