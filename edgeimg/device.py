"""What this machine is: the facts an engine's validity depends on, and what `doctor` shows."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

JETSON_RELEASE = Path("/etc/nv_tegra_release")


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None; never imports it."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where present)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jetpack_release(path: Path = JETSON_RELEASE) -> str | None:
    """The L4T release line on a Jetson (e.g. "R36 (release), REVISION: 3.0"), else None."""
    try:
        first = path.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return first.lstrip("# ").strip()


def cuda_devices() -> list[dict[str, Any]]:
    """CUDA devices as torch sees them: name, compute capability, SM count, memory."""
    if package_version("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "index": index,
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "sm_count": props.multi_processor_count,
                "memory_gib": round(props.total_memory / 2**30, 1),
            }
        )
    return devices


def tool_version(command: str, *args: str) -> dict[str, Any]:
    """Where a command-line tool is and the first line of its version output."""
    path = shutil.which(command)
    if path is None:
        return {"path": None, "version": None}
    try:
        done = subprocess.run(
            [path, *args], capture_output=True, text=True, timeout=10, check=False
        )
        lines = (done.stdout or done.stderr).strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    return {"path": path, "version": lines[0].strip() if lines else None}
