"""PyTorch eager: the verification reference, and the GPU path where TensorRT is absent.

Its engine file is the FP32 state dict (safetensors); FP16 runs on CUDA only, since half
precision convolutions on a CPU are slower than FP32 there and gain nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeimg import hookimpl
from edgeimg.backends.base import Backend, CompileJob, Runner, physical_cores
from edgeimg.device import gpu_description


class TorchRunner:
    """A torch module in eval mode on CPU or the first CUDA device."""

    def __init__(self, network: Any, precision: str) -> None:
        import torch

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if self.device.type == "cpu":
            torch.set_num_threads(physical_cores())
        self.network = network.eval().to(self.device, self.dtype)

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        import torch

        tensors = [
            torch.from_numpy(np.ascontiguousarray(a)).to(
                self.device, self.dtype if np.issubdtype(a.dtype, np.floating) else None
            )
            for a in arrays
        ]
        with torch.inference_mode():
            outputs = self.network(*tensors)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return tuple(o.float().cpu().numpy() for o in outputs)


class TorchBackend(Backend):
    name = "torch"
    summary = "PyTorch eager on CPU or CUDA; the reference"
    distribution = "torch"
    precisions = ("fp32", "fp16")
    priority = 10
    engine_file = "weights.safetensors"
    uses_gpu = True

    def unsupported(self, precision: str) -> str | None:
        reason = super().unsupported(precision)
        if reason is None and precision == "fp16" and gpu_description() is None:
            return "fp16 needs a CUDA GPU (none found)"
        return reason

    def compile(self, job: CompileJob) -> Path:
        from safetensors.torch import save_file

        target = job.out_dir / self.engine_file
        state = {k: v.detach().contiguous().cpu() for k, v in job.network.state_dict().items()}
        save_file(state, str(target))
        return target

    def open(self, engine_path: Path, spec: Any, manifest: dict[str, Any]) -> Runner:
        from safetensors.torch import load_file

        network = spec.load()(spec).build()
        network.load_state_dict(load_file(str(engine_path)))
        return TorchRunner(network, manifest["precision"])


@hookimpl
def register_backends(register):
    register(TorchBackend())
