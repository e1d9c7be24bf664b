"""TensorRT 10+: serialized plans for NVIDIA GPUs and Jetson; tensorrt and pycuda load lazily."""

from __future__ import annotations

import importlib.metadata

from edgeimg import hookimpl
from edgeimg.backends.base import Backend


class TensorRTBackend(Backend):
    name = "tensorrt"
    summary = "TensorRT 10+ plan with pycuda buffers; NVIDIA GPU or Jetson"
    distribution = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    priority = 100

    def missing(self) -> str | None:
        if self.version() is None:
            return (
                "TensorRT is not installed (pip install 'edgeimg[tensorrt]' on an NVIDIA machine)"
            )
        try:
            importlib.metadata.version("pycuda")
        except importlib.metadata.PackageNotFoundError:
            return "pycuda is not installed (pip install 'edgeimg[tensorrt]')"
        return None


@hookimpl
def register_backends(register):
    register(TensorRTBackend())
