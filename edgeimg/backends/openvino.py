"""OpenVINO on the CPU: FP32, BF16 where the CPU has it, INT8 from our QDQ graph (calibrated
with symmetric activations, as for TensorRT).

The engine file is the compiled model exported as a blob (`compiled.export_model()`), so a warm
start imports it without recompiling. The blob depends on the OpenVINO version, the CPU and the
precision, all of which are in the engine's key. FP32 is asked for explicitly
(INFERENCE_PRECISION_HINT=f32): on CPUs with AMX, OpenVINO's default would be BF16.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg import hookimpl
from edgeimg.backends.base import Backend, CompileJob, Runner
from edgeimg.backends.threads import thread_budget

DEVICE = "CPU"
#: our precision name → OpenVINO's inference precision hint (INT8 runs the QDQ graph's
#: FakeQuantize nodes in INT8 and everything between them in FP32)
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin reports it can run natively (FP32, BF16, INT8, ...)."""
    return tuple(_core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def compile_config(precision: str) -> dict[str, Any]:
    """One stream at latency, one thread per physical core (or the caller's budget when it
    shares the cores: `edgeimg.backends.threads`), like the ONNX Runtime sessions.

    Threads are not pinned: with pinning, every further compiled model in the process (serve
    runs several; a race opens six) ran slower, the third instance of one cnn engine at 32 ms
    per batch against the first's 7 ms; unpinned all three ran at 2.6-3.1 ms.
    """
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": thread_budget().threads,
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoRunner:
    """A compiled model and one infer request; outputs are copied out of OpenVINO's buffers."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        result = self.request.infer([np.ascontiguousarray(a) for a in arrays])
        return tuple(np.array(result[output], copy=True) for output in self.outputs)


class OpenVinoBackend(Backend):
    name = "openvino"
    summary = "OpenVINO on the CPU: FP32, BF16 (AVX512_BF16/AMX), INT8 from the QDQ graph"
    distribution = "openvino"
    precisions = ("fp32", "bf16", "int8")
    priority = 40
    engine_file = "model.ov.blob"
    #: OpenVINO runs INT8 activations with zero point 0 on its VNNI/AMX kernels; with ONNX
    #: Runtime's asymmetric ones it fell back (cnn, batch 8: 3.1 ms symmetric, 22.9 asymmetric)
    symmetric_activations = True

    def unsupported(self, precision: str) -> str | None:
        reason = super().unsupported(precision)
        if reason is None and precision == "bf16" and "BF16" not in cpu_capabilities():
            return "this CPU has no BF16 (needs AVX512_BF16 or AMX; OpenVINO reports none)"
        return reason

    def compile(self, job: CompileJob) -> Path:
        compiled = _core().compile_model(
            _core().read_model(str(job.onnx_path)), DEVICE, compile_config(job.precision)
        )
        stream = io.BytesIO()
        compiled.export_model(stream)
        target = job.out_dir / self.engine_file
        target.write_bytes(stream.getvalue())
        return target

    def open(self, engine_path: Path, spec: Any, manifest: dict[str, Any]) -> Runner:
        blob = io.BytesIO(engine_path.read_bytes())
        config = compile_config(manifest["precision"])
        return OpenVinoRunner(_core().import_model(blob, DEVICE, config))


@hookimpl
def register_backends(register):
    register(OpenVinoBackend())
