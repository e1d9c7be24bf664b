"""`edgeimg plugin new`: the package it writes installs with pip and goes through train,
build-engine and run as written, for every task; docs/example-plugin is its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeimg.scaffold import render
from edgeimg.scaffold.tasks import TASKS
from edgeimg.synth.dicom import write_study
from tests.conftest import ROOT, run_edgeimg
from tests.dciodvfy import dciodvfy_errors

EXAMPLE = ROOT / "docs" / "example-plugin"


def test_example_plugin_is_what_the_scaffold_writes():
    files = render("hello", "classify")
    built = ("__pycache__", "build", "edgeimg_hello.egg-info")  # left by pip installing it
    shipped = {
        str(path.relative_to(EXAMPLE)): path.read_text()
        for path in EXAMPLE.rglob("*")
        if path.is_file() and not set(path.relative_to(EXAMPLE).parts) & set(built)
    }
    assert shipped == files, "regenerate: edgeimg plugin new hello --dir /tmp, copy to docs"


def test_example_plugin_passes_its_own_tests():
    env = dict(os.environ, PYTHONPATH=str(EXAMPLE), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


DOC_EXAMPLES = {
    "classify": "hello",
    "segment": "lesion-mask",
    "detect": "lesion-box",
    "sequence": "persist",
    "enhance": "denoise",
}


@pytest.mark.parametrize("task", list(TASKS))
def test_docs_show_what_the_scaffold_writes_for_each_task(task):
    name = DOC_EXAMPLES[task]
    model = render(name, task)[f"edgeimg_{name.replace('-', '_')}/model.py"]
    assert model in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("task", list(TASKS))
def test_scaffold_declares_build_system_packages_and_entry_point(task):
    pyproject = render("demo", task)["pyproject.toml"]
    assert '[build-system]\nrequires = ["setuptools>=64"]' in pyproject
    assert 'packages = ["edgeimg_demo"]' in pyproject
    assert '[project.entry-points.edgeimg]\nedgeimg-demo = "edgeimg_demo"' in pyproject


def test_bad_name_and_existing_folder_are_usage_errors(tmp_path):
    done = run_edgeimg("plugin", "new", "Bad_Name", "--dir", str(tmp_path))
    assert done.returncode == 2 and "lower-case letters" in done.stderr
    assert run_edgeimg("plugin", "new", "ok", "--dir", str(tmp_path)).returncode == 0
    again = run_edgeimg("plugin", "new", "ok", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists and is not empty" in again.stderr
    assert "Traceback" not in done.stderr + again.stderr


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One small synthetic CT series at the scaffold's input size (64) with enough slices for
    the sequence template (min_length 8)."""
    out = tmp_path_factory.mktemp("study")
    write_study(out, series=1, slices=8, size=64, seed=5)
    return out


def _installed(tmp_path: Path, task: str) -> tuple[str, dict[str, str]]:
    """Scaffold plugin `s-TASK` and pip-install it into a private site folder (no venv change)."""
    name = f"s-{task}"
    done = run_edgeimg("plugin", "new", name, "--task", task, "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(site), str(tmp_path / f"edgeimg-{name}")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    for variable in ("EDGEIMG_LOAD_PLUGINS", "EDGEIMG_DISABLE_PLUGINS"):
        env.pop(variable, None)
    return name, env


@pytest.mark.parametrize("task", list(TASKS))
def test_scaffolded_plugin_trains_builds_and_runs(task, study, tmp_path):
    name, env = _installed(tmp_path, task)
    plugins = json.loads(run_edgeimg("plugins", "--json", env=env).stdout)["plugins"]
    mine = next(p for p in plugins if p["name"] == f"edgeimg-{name}")
    assert mine["sdk"] == "ok" and mine["error"] is None
    weights, engines = tmp_path / "w.safetensors", tmp_path / "engines"
    done = run_edgeimg(
        "train", name, "--epochs", "1", "--limit", "16", "--out", str(weights), "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    common = ["--weights", str(weights), "--backend", "onnxruntime", "--engines-dir", str(engines)]
    done = run_edgeimg("build-engine", name, *common, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verification"]["verified"]
    out = tmp_path / "out"
    done = run_edgeimg(
        "run", name, str(study), *common, "--out", str(out), "--workers", "0", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    written = [Path(p) for line in lines for p in line.get("outputs", []) if p.endswith(".dcm")]
    assert written, lines
    for path in written:
        assert dciodvfy_errors(path) == [], path
