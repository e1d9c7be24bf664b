"""The Backend interface every engine backend implements.

Backend modules import their runtime (onnxruntime, torch, tensorrt) lazily inside methods so
that registering and listing them stays cheap. A backend turns an ONNX graph into an engine file
(`compile`) and opens that file for inference (`open`); the engine store does the rest.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgeimg import device as host

if TYPE_CHECKING:
    from edgeimg.sdk.model import ModelSpec

#: per input name: (min, opt, max) shapes of one optimization profile
Profiles = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class BackendUnavailable(Exception):
    """The backend cannot run on this machine; the message says what is missing."""


class Runner(Protocol):
    """An opened engine: numpy arrays in, numpy arrays out, in the ONNX input/output order."""

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]: ...


@dataclass
class CompileJob:
    """Everything a backend needs to write its engine file into `out_dir`."""

    spec: ModelSpec
    onnx_path: Path
    out_dir: Path
    precision: str
    profiles: Profiles
    #: the torch FP32 network the ONNX came from (the torch backend stores its weights)
    network: Any = None


def physical_cores() -> int:
    """Physical cores this process may use: hyperthreads slow ONNX Runtime and torch down."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores: set[tuple[str, str]] = set()
    physical = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                physical = value.strip()
            elif key.strip() == "core id":
                cores.add((physical, value.strip()))
    except OSError:
        pass
    return max(1, min(len(cores) or usable or 1, usable or 1))


class Backend:
    """Base class: subclasses set the class attributes and implement the engine methods."""

    name: str = ""
    summary: str = ""
    distribution: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    priority: int = 0
    engine_file: str = "engine.bin"
    #: INT8 QDQ graphs with zero-point-free activations (TensorRT needs them; a CPU need not)
    symmetric_activations: bool = True
    #: its engines depend on the GPU and its driver too (TensorRT plans, torch on CUDA)
    uses_gpu: bool = False

    def version(self) -> str | None:
        """The installed version of the runtime, or None when it is not installed."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def missing(self) -> str | None:
        """Why this backend cannot run here, or None when it can."""
        if self.version() is None:
            return f"{self.distribution} is not installed"
        return None

    def unsupported(self, precision: str) -> str | None:
        """Why this backend cannot build `precision` here, or None when it can."""
        if precision not in self.precisions:
            return (
                f"backend {self.name} does not support {precision} "
                f"(it supports {', '.join(self.precisions)})"
            )
        return None

    def require(self, precision: str) -> None:
        """Raise BackendUnavailable with one line saying what is missing."""
        reason = self.missing() or self.unsupported(precision)
        if reason:
            raise BackendUnavailable(f"backend {self.name} unavailable: {reason}")

    def device(self) -> dict[str, Any]:
        """The facts an engine from this backend depends on (the engine key's device part):
        the CPU model and the ISA flags its kernels may use; for GPU backends also the GPU and
        the NVIDIA driver, which a CPU engine does not depend on."""
        facts: dict[str, Any] = {
            "cpu": host.cpu_model(),
            "isa": host.cpu_isa_flags(),
            "jetpack": host.jetpack_release(),
        }
        if self.uses_gpu:
            facts["gpu"] = host.gpu_description()
            facts["driver"] = host.nvidia_driver_version()
        return facts

    def device_for(self, spec: ModelSpec) -> dict[str, Any]:
        """The device facts for one model's engine (a remote backend adds the remote model)."""
        return self.device()

    def compile(self, job: CompileJob) -> Path:
        """Write the engine file for `job` into job.out_dir and return its path."""
        raise NotImplementedError

    def open(self, engine_path: Path, spec: ModelSpec, manifest: dict[str, Any]) -> Runner:
        """Open an engine file written by `compile` for inference."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "version": self.version(),
            "precisions": list(self.precisions),
            "available": self.missing() is None,
            "missing": self.missing(),
        }
