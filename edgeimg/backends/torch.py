"""PyTorch eager: the verification reference, and the GPU path where TensorRT is absent."""

from __future__ import annotations

from edgeimg import hookimpl
from edgeimg.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"
    summary = "PyTorch eager on CPU or CUDA; the reference"
    distribution = "torch"
    precisions = ("fp32", "fp16")
    priority = 10


@hookimpl
def register_backends(register):
    register(TorchBackend())
