"""Whether the installed version of a fenced library is the one pyproject.toml pins."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def pin_problem(distribution: str, fence: str) -> str | None:
    """Why the installed `distribution` is not pinned, or not within its pin, for the `fence`
    module that relies on its internals; None when all is well."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [Requirement(dep) for dep in project["dependencies"]]
    (pin,) = [pin for pin in pins if pin.name == distribution]
    if not pin.specifier:
        return f"{distribution} must be pinned: {fence} relies on its internals"
    installed = version(distribution)
    if not pin.specifier.contains(installed):
        return (
            f"{distribution} {installed} is outside the pin {pin}: run {fence}'s contract test, "
            "then move the pin"
        )
    return None
