"""`edgeimg doctor`: what this box has for running models and talking DICOM."""

from __future__ import annotations

import platform
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from edgeimg import device
from edgeimg.console import out, print_json
from edgeimg.plugins import get_registry

PACKAGES = ("torch", "onnxruntime", "tensorrt", "pycuda", "pydicom", "pynetdicom", "highdicom")
TOOLS = {
    "storescu": ("storescu", "--version"),
    "echoscu": ("echoscu", "--version"),
    "dciodvfy": ("dciodvfy", "-version"),
    "orthanc": ("Orthanc", "--version"),
}


def collect() -> dict[str, Any]:
    """Every fact doctor reports, as one JSON-ready dictionary."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": device.cpu_model(),
        "cpu_isa": device.cpu_isa_flags(),
        "nvidia_driver": device.nvidia_driver_version(),
        "packages": {name: device.package_version(name) for name in PACKAGES},
        "cuda_devices": device.cuda_devices(),
        "jetpack": device.jetpack_release(),
        "tools": {name: device.tool_version(*command) for name, command in TOOLS.items()},
        "backends": [backend.as_dict() for backend in get_registry().backends.values()],
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def doctor(as_json: bool) -> None:
    """Report Python, torch, ONNX Runtime, TensorRT, GPUs, JetPack and DICOM tools."""
    facts = collect()
    if as_json:
        print_json(facts)
        return
    table = Table(title="edgeimg doctor", show_header=False)
    table.add_column("what")
    table.add_column("found")
    table.add_row("python", facts["python"])
    table.add_row("cpu", facts["cpu"])
    table.add_row("cpu features", " ".join(facts["cpu_isa"]) or "none the engines key on")
    for name, version in facts["packages"].items():
        table.add_row(name, version or "[yellow]not installed[/]")
    gpus = ", ".join(
        f"{gpu['name']} (sm {gpu['compute_capability']}, {gpu['sm_count']} SMs)"
        for gpu in facts["cuda_devices"]
    )
    table.add_row("CUDA devices", gpus or "none")
    table.add_row("NVIDIA driver", facts["nvidia_driver"] or "none")
    table.add_row("JetPack", facts["jetpack"] or "not a Jetson")
    for name, tool in facts["tools"].items():
        table.add_row(name, tool["path"] or "[yellow]not found[/]")
    for backend in facts["backends"]:
        status = "available" if backend["available"] else f"[yellow]{escape(backend['missing'])}[/]"
        table.add_row(f"backend {backend['name']}", status)
    out.print(table)
