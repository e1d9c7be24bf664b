"""`edgeimg plugin new`: start a model plugin from a working, tested package."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from edgeimg.console import err
from edgeimg.scaffold import ScaffoldError, write
from edgeimg.scaffold.tasks import TASKS


@click.group()
def plugin() -> None:
    """Write model plugins for edgeimg."""


@plugin.command("new")
@click.argument("name")
@click.option(
    "--task",
    type=click.Choice(list(TASKS)),
    default="classify",
    show_default=True,
    help="What the model does; picks the SDK base class, the network and the outputs.",
)
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create the package folder edgeimg-NAME.",
)
def new(name: str, task: str, parent: Path) -> None:
    """Write an installable plugin package for model NAME: pyproject, a small network on the
    SDK base class for TASK, and its own tests."""
    try:
        root = write(name, task, parent)
    except ScaffoldError as error:
        raise click.UsageError(str(error)) from None
    err.print(f"[green]wrote[/] {escape(str(root))}")
    err.print(
        f"next: pip install -e {escape(str(root))} && "
        f"edgeimg train {name} --out {escape(str(root))}/edgeimg_{name.replace('-', '_')}"
        f"/weights/{name}.safetensors"
    )
