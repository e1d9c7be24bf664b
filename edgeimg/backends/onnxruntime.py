"""ONNX Runtime: the CPU default engine.

The engine file is the graph as ONNX Runtime optimized it for this CPU (ORT_ENABLE_ALL), so a
warm start skips the optimizer; FP32 and INT8 (QDQ) graphs go through the same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeimg import hookimpl
from edgeimg.backends.base import Backend, CompileJob, Runner
from edgeimg.backends.threads import thread_budget


def session_options(optimized_path: Path | None = None) -> Any:
    """Tuned options: one intra-op thread per physical core (fewer, not spinning, when the
    caller shares the cores: `edgeimg.backends.threads`), every graph optimization."""
    import onnxruntime as ort

    budget = thread_budget()
    options = ort.SessionOptions()
    options.intra_op_num_threads = budget.threads
    if not budget.spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if optimized_path is None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimized_path)
    options.log_severity_level = 3
    return options


class OnnxRuntimeSession:
    """A CPU inference session over an ONNX file."""

    def __init__(self, path: Path, optimized: bool = True) -> None:
        import onnxruntime as ort

        options = session_options()
        if not optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [item.name for item in self.session.get_inputs()]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        feeds = dict(zip(self.input_names, arrays, strict=True))
        return tuple(self.session.run(None, feeds))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    summary = "ONNX Runtime, optimized graph; the CPU default"
    distribution = "onnxruntime"
    precisions = ("fp32", "int8")
    priority = 50
    engine_file = "model.ort.onnx"
    symmetric_activations = False

    def compile(self, job: CompileJob) -> Path:
        import onnxruntime as ort

        target = job.out_dir / self.engine_file
        ort.InferenceSession(
            str(job.onnx_path), session_options(target), providers=["CPUExecutionProvider"]
        )
        return target

    def open(self, engine_path: Path, spec: Any, manifest: dict[str, Any]) -> Runner:
        return OnnxRuntimeSession(engine_path)


@hookimpl
def register_backends(register):
    register(OnnxRuntimeBackend())
