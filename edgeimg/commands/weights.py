"""`--weights FILE` for build-engine, bench, run and serve: weights for a plugin that ships none.

The given file replaces the spec's weights in this process's registry, so the engine store keys
engines by its hash like any shipped weights. Only safetensors files are accepted: a pickle can
run code on load.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from edgeimg.plugins import get_registry

WEIGHTS_HELP = (
    "Safetensors weights (from `edgeimg train --out`) instead of the weights the plugin ships; "
    "needed for a plugin that ships none."
)


def weights_option(multiple: bool = False) -> Any:
    """The shared --weights option; `multiple` (serve) takes NAME=FILE per model."""
    help_text = WEIGHTS_HELP + (
        " NAME=FILE per --model, or FILE with one --model." if multiple else ""
    )
    return click.option(
        "--weights",
        "weights",
        multiple=multiple,
        type=str if multiple else click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help_text,
    )


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception:
        raise click.BadParameter(
            f"{path} is not a safetensors file (edgeimg loads safetensors weights only)",
            param_hint="--weights",
        ) from None


def use_weights(name: str, path: Path | None) -> None:
    """Point model NAME at the weights file `path` for the rest of this process."""
    if path is None:
        return
    path = Path(path).resolve()
    _check_safetensors(path)
    registry = get_registry()
    spec = registry.model(name)
    registry.models[name] = dataclasses.replace(spec, weights=str(path))


def use_weights_for(models: list[str], values: tuple[str, ...]) -> None:
    """serve's `--weights NAME=FILE` (or FILE with exactly one model)."""
    for value in values:
        name, sep, file = value.rpartition("=")
        if not sep:
            if len(models) != 1:
                raise click.BadParameter(
                    "give NAME=FILE when serving more than one model", param_hint="--weights"
                )
            name, file = models[0], value
        if name not in models:
            raise click.BadParameter(f"{name!r} is not a served --model", param_hint="--weights")
        path = Path(file)
        if not path.is_file():
            raise click.BadParameter(f"{path} does not exist", param_hint="--weights")
        use_weights(name, path)
