"""What this machine is: the facts an engine's validity depends on, and what `doctor` shows."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

JETSON_RELEASE = Path("/etc/nv_tegra_release")
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
#: CPU features that decide which kernels a runtime compiles into an engine (x86, then ARM)
ENGINE_ISA_FLAGS = frozenset(
    {
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "avx_vnni",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "asimd",
        "asimddp",
        "asimdhp",
        "i8mm",
        "bf16",
        "sve",
        "sve2",
    }
)


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


def cpu_isa_flags() -> list[str]:
    """The CPU features an engine's kernels may rely on (AVX-512, AMX, NEON dot product...):
    two CPUs with one model name can differ in them (microcode, hypervisor masks)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return sorted(ENGINE_ISA_FLAGS.intersection(value.split()))
    return []


def nvidia_driver_version(path: Path = NVIDIA_DRIVER) -> str | None:
    """The NVIDIA driver version (TensorRT plans do not move between drivers), None without one.

    /proc is read first (no process to start), then pynvml when installed, then nvidia-smi.
    """
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]*)", path.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    return _driver_from_nvml() or _driver_from_smi()


def _driver_from_nvml() -> str | None:
    if package_version("nvidia-ml-py") is None and package_version("pynvml") is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver or no device: not a GPU box
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def _driver_from_smi() -> str | None:
    found = tool_version("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    version = found["version"] or ""
    return version if re.fullmatch(r"[0-9][0-9.]*", version) else None


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


def gpu_description() -> dict[str, Any] | None:
    """The first CUDA device: what a GPU engine's validity depends on besides the driver."""
    devices = cuda_devices()
    if not devices:
        return None
    first = devices[0]
    return {key: first[key] for key in ("name", "compute_capability", "sm_count")}


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
