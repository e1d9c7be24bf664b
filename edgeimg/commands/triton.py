"""`edgeimg export-triton` and `edgeimg host`: this box's engines for a Triton server.

Exit status: 0 done, 1 no verified engine to export or host, or the server failed; 2 usage
errors and a runtime missing here (one line saying what).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from edgeimg.commands.engines import engine_errors, engines_dir_option, json_option
from edgeimg.console import err, out, print_json
from edgeimg.engine.build import PRECISIONS
from edgeimg.plugins import get_registry


@click.command("export-triton")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--repo",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The Triton model repository to write (created if absent).",
)
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option(
    "--device",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Where Triton runs the model: KIND_CPU, or KIND_GPU (and a TensorRT plan "
    "where one was built here).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="The --max-batch the engines were built with (it is part of their key).",
)
@engines_dir_option
@json_option
def export_triton(
    names: tuple[str, ...],
    repo: Path,
    precision: str,
    device: str,
    max_batch: int,
    engines_dir: Path | None,
    as_json: bool,
) -> None:
    """Write a Triton model repository from NAMES' built and verified engines."""
    from edgeimg.engine import store
    from edgeimg.triton.repository import export_model

    root = store.engines_root(engines_dir)
    registry = get_registry()
    repo.mkdir(parents=True, exist_ok=True)
    with engine_errors():
        exported = [
            export_model(
                registry.model(name), registry.backends, repo, precision, device, root, max_batch
            )
            for name in names
        ]
    if as_json:
        print_json({"repo": str(repo), "models": [item.as_dict() for item in exported]})
        return
    for item in exported:
        state = "exported" if item.changed else "unchanged"
        out.print(
            f"{state} {item.model} version {item.version} ({item.platform}, engine "
            f"{item.key}) in {escape(str(item.path))}"
        )


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--backend", default="auto", show_default=True, help="Engine backend to host.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@engines_dir_option
def host(
    names: tuple[str, ...],
    backend: str,
    precision: str,
    address: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    engines_dir: Path | None,
) -> None:
    """Serve NAMES' verified engines to other boxes through Triton Inference Server (PyTriton)."""
    from edgeimg.engine import load_engine
    from edgeimg.triton.host import Ports, host

    if backend == "triton":
        raise click.UsageError("host serves engines on this box; --backend triton is a client")
    try:
        import pytriton  # noqa: F401
    except ImportError:
        err.print("[red]error:[/] edgeimg host needs nvidia-pytriton (pip install nvidia-pytriton)")
        raise SystemExit(2) from None
    with engine_errors():
        registry = get_registry()
        engines = [
            load_engine(registry.model(name), registry.backends, backend, precision, engines_dir)
            for name in names
        ]
    ports = Ports(http_port, grpc_port, metrics_port, address)

    def ready() -> None:
        for engine in engines:
            out.print(
                f"hosting {engine.manifest['model']} {precision} engine {engine.key} "
                f"({engine.manifest['backend']})"
            )
        out.print(
            f"triton: grpc {address}:{grpc_port}, http {address}:{http_port}, metrics "
            f"http://{address}:{metrics_port}/metrics; Ctrl-C stops"
        )

    try:
        host(engines, ports, ready)
    except KeyboardInterrupt:
        pass
    except Exception as error:  # PyTriton's own failures (a port taken, a model refused)
        # Their text is about the server and model configs (no DICOM reaches this point).
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        err.print(f"[red]error:[/] tritonserver failed: {escape(text)}", soft_wrap=True)
        raise SystemExit(1) from None
