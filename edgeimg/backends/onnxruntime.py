"""ONNX Runtime: the CPU default engine."""

from __future__ import annotations

from edgeimg import hookimpl
from edgeimg.backends.base import Backend


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    summary = "ONNX Runtime, optimized graph; the CPU default"
    distribution = "onnxruntime"
    precisions = ("fp32", "int8")
    priority = 50


@hookimpl
def register_backends(register):
    register(OnnxRuntimeBackend())
