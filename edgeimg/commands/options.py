"""Options shared by several command modules."""

from __future__ import annotations

import os
from pathlib import Path

import click


def _set_target(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--triton wins over $EDGEIMG_TRITON for this process (and the threads serve starts)."""
    if value:
        from edgeimg.backends.triton import ENV_TARGET, parse_target
        from edgeimg.engine.errors import EngineError

        try:
            parse_target(value)
        except EngineError as error:
            raise click.BadParameter(str(error)) from None
        os.environ[ENV_TARGET] = value


triton_option = click.option(
    "--triton",
    metavar="HOST:PORT",
    expose_value=False,
    callback=_set_target,
    help="Triton server for --backend triton: HOST:PORT (gRPC), http://, grpcs:// or https:// "
    "(default: $EDGEIMG_TRITON).",
)


def calib_option(
    help: str = "DICOM files or folders to calibrate INT8 on (default: synthetic held-out data).",
):
    """--calib: the data an INT8 engine is calibrated on, part of its key."""
    return click.option(
        "--calib", multiple=True, type=click.Path(exists=True, path_type=Path), help=help
    )


#: for the commands that load an engine rather than build one to order
CALIB_TO_LOAD = (
    "With --precision int8: the DICOM files or folders its engine was calibrated on, as given "
    "to build-engine (default: synthetic held-out data)."
)
