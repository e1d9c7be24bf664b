"""A minimal edgeimg plugin: registers a model spec and a command, imports no torch."""

import click

from edgeimg import hookimpl
from edgeimg.model import InputSpec, ModelSpec


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="hello",
            version="0.1.0",
            task="classify",
            summary="Says hello to every CT slice",
            implementation="edgeimg_hello.model:HelloModel",
            input=InputSpec(size=(64, 64)),
        )
    )


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("name", default="scanner")
    def hello(name):
        """Greet a scanner."""
        click.echo(f"hello, {name}")
