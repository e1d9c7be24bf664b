"""Hook specifications: what a plugin may register with edgeimg."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from edgeimg.backends.base import Backend
    from edgeimg.sdk.model import ModelSpec
    from edgeimg.writers import Writer

hookspec = pluggy.HookspecMarker("edgeimg")


@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register model specs by calling register(ModelSpec(...))."""


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Register engine backends by calling register(backend)."""


@hookspec
def register_writers(register: Callable[[Writer], None]) -> None:
    """Register result writers (result kind to DICOM or JSON) by calling register(writer)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add extra click commands to the edgeimg command group."""
