"""Shared fixtures: real entry points on a temporary sys.path, and a clean registry per test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeimg.plugins import reset_registry

ROOT = Path(__file__).resolve().parent.parent

#: run and serve default to `--precision auto`, which races every engine first; tests that run
#: models pin FP32 (here and in the edgeimg subprocesses they start); tests of auto ask for it
os.environ.setdefault("EDGEIMG_PRECISION", "fp32")


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Every test starts with no loaded registry and no allow/deny lists from the environment."""
    monkeypatch.delenv("EDGEIMG_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("EDGEIMG_DISABLE_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="session")
def engines(tmp_path_factory) -> Path:
    """One engine store for the session: engines are keyed by their content, so sharing is
    safe, and each model is built once rather than once per test module."""
    return tmp_path_factory.mktemp("engines")


def write_distribution(root: Path, dist: str, entry_point: str, module: str, source: str) -> Path:
    """An installed distribution as pip leaves it: a module plus a dist-info with entry points."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[edgeimg]\n{entry_point} = {module}\n")
    return root


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """A directory on sys.path (in this process and in edgeimg subprocesses) for test plugins."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))
    )
    return path


def run_edgeimg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    command = [sys.executable, "-m", "edgeimg", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
