"""`edgeimg plugins` and `edgeimg models`: what is installed, without importing torch."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from edgeimg.console import out, print_json
from edgeimg.plugins import get_registry


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also show the built-in default plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def plugins(show_all: bool, as_json: bool) -> None:
    """List installed plugins, their SDK compatibility, hooks and any load errors."""
    registry = get_registry()
    shown = [info for info in registry.plugins.values() if show_all or not info.default]
    if as_json:
        print_json(
            {
                "plugins": [info.as_dict() for info in shown],
                "backends": [backend.as_dict() for backend in registry.backends.values()],
                "writers": [writer.as_dict() for writer in registry.writers.values()],
            }
        )
        return
    table = Table(title="edgeimg plugins")
    for column in ("name", "version", "sdk", "hooks", "status"):
        table.add_column(column)
    for info in shown:
        status = f"[red]error:[/] {escape(info.error)}" if info.error else "[green]ok[/]"
        version = info.version or ("built-in" if info.default else "")
        sdk = escape(f"{info.sdk_requires} ({info.sdk})" if info.sdk_requires else info.sdk)
        table.add_row(info.name, version, sdk, ", ".join(info.hooks), status)
    out.print(table)
    backends = Table(title="backends")
    for column in ("name", "version", "precisions", "status"):
        backends.add_column(column)
    for backend in registry.backends.values():
        missing = backend.missing()
        status = f"[yellow]{escape(missing)}[/]" if missing else "[green]available[/]"
        backends.add_row(
            backend.name, backend.version() or "", ", ".join(backend.precisions), status
        )
    out.print(backends)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models(as_json: bool) -> None:
    """List the models that installed plugins offer."""
    specs = get_registry().models.values()
    if as_json:
        print_json({"models": [spec.as_dict() for spec in specs]})
        return
    table = Table(title="edgeimg models")
    for column in ("name", "version", "task", "input", "plugin", "summary"):
        table.add_column(column)
    for spec in specs:
        size = "x".join(str(n) for n in spec.input.size)
        table.add_row(spec.name, spec.version, spec.task, size, spec.plugin, spec.summary)
    out.print(table)
