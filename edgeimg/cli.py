"""The `edgeimg` command group. Each command lives in its own module under edgeimg/commands."""

from __future__ import annotations

import importlib

import click

from edgeimg import __version__
from edgeimg.console import warn
from edgeimg.errors import ContractError
from edgeimg.plugins import PluginError, UnknownName, add_commands, get_registry
from edgeimg.privacy import capture

CORE_COMMANDS = {
    "plugins": "edgeimg.commands.listing:plugins",
    "models": "edgeimg.commands.listing:models",
    "doctor": "edgeimg.commands.doctor:doctor",
    "synth": "edgeimg.commands.synth:synth",
    "run": "edgeimg.commands.run:run",
    "build-engine": "edgeimg.commands.engines:build_engine_command",
    "engines": "edgeimg.commands.engines:engines",
    "bench": "edgeimg.commands.engines:bench",
    "train": "edgeimg.commands.train:train",
    "evaluate": "edgeimg.commands.train:evaluate",
    "serve": "edgeimg.commands.serve:serve",
    "echo": "edgeimg.commands.network:echo",
    "send": "edgeimg.commands.network:send",
    "queue": "edgeimg.commands.queue:queue",
    "deid": "edgeimg.commands.deid:deid",
    "export-triton": "edgeimg.commands.triton:export_triton",
    "host": "edgeimg.commands.triton:host",
    "plugin": "edgeimg.commands.plugin:plugin",
}


class EdgeimgGroup(click.Group):
    """Adds core and plugin commands on first use and turns known errors into clean exits."""

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for name, target in CORE_COMMANDS.items():
            module_name, _, attribute = target.partition(":")
            self.add_command(getattr(importlib.import_module(module_name), attribute), name)
        add_commands(self, lambda plugin, error: None)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UnknownName as error:
            raise click.UsageError(str(error), ctx) from None
        except (PluginError, ContractError) as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=EdgeimgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgeimg")
def cli() -> None:
    """Run trained imaging models next to the scanner: build engines, serve DICOM, send results."""
    capture()
    registry = get_registry()
    for info in registry.failures:
        warn(f"plugin {info.name!r} is not loaded: {info.error} (see `edgeimg plugins`)")


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="edgeimg")
    except PluginError as error:
        raise SystemExit(f"error: {error}") from None
