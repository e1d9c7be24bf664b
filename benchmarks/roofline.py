"""How close an engine is to what this CPU can compute: FLOPs per image against measured peaks.

The FP32 peak is ONNX Runtime's own SGEMM on a large square matrix product, with the session
options our engines use (one intra-op thread per physical core): no FP32 convolution of the same
FLOPs runs faster on this machine. The BF16 peak is the same product compiled by OpenVINO with
BF16 inference precision and the `openvino` backend's options (AVX512_BF16 or AMX tiles where the
CPU has them): the ceiling for the reduced-precision engines. A model's FLOPs are counted from
its convolutions and linear layers (multiply and add count as two), which is where nearly all of
a CNN's work is.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from edgeimg.sdk.model import ModelSpec

GEMM_SIZE = 1024
#: the BF16 peak is the best of these sizes (bigger ones fall out of cache on small CPUs)
BF16_GEMM_SIZES = (1024, 2048)
GEMM_SECONDS = 3.0


def _gemm_model(size: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((size, size)).astype(np.float32), "weight"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _gflops(run: Any, size: int, seconds: float) -> float:
    """2·size³ FLOPs over the best of repeated calls of `run` (after one warm-up call)."""
    run()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def _square(size: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)


def sgemm_gflops(size: int = GEMM_SIZE, seconds: float = GEMM_SECONDS) -> float:
    """ONNX Runtime FP32 matrix-product throughput in GFLOP/s (best of repeated runs)."""
    import onnxruntime as ort

    from edgeimg.backends.onnxruntime import session_options

    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(_gemm_model(size), options, providers=["CPUExecutionProvider"])
    feeds = {"x": _square(size)}
    return _gflops(lambda: session.run(None, feeds), size, seconds)


def bf16_gemm_gflops(
    sizes: tuple[int, ...] = BF16_GEMM_SIZES, seconds: float = GEMM_SECONDS
) -> float | None:
    """OpenVINO BF16 matrix-product throughput in GFLOP/s, best over `sizes`; None where
    OpenVINO is missing or the CPU has no BF16."""
    from edgeimg.backends.openvino import OpenVinoBackend, _core, compile_config

    if OpenVinoBackend().missing() or OpenVinoBackend().unsupported("bf16"):
        return None
    best = 0.0
    for size in sizes:
        model = _core().read_model(_gemm_model(size), b"")
        compiled = _core().compile_model(model, "CPU", compile_config("bf16"))
        run = functools.partial(compiled.create_infer_request().infer, [_square(size)])
        best = max(best, _gflops(run, size, seconds / len(sizes)))
    return best


def flops_per_image(spec: ModelSpec) -> float:
    """FLOPs of one forward pass on one input, from its Conv2d/ConvTranspose2d/Linear layers."""
    import torch
    from torch import nn

    from edgeimg.sdk.training import load_network

    network = load_network(spec).eval()
    total = 0.0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            if isinstance(module, nn.ConvTranspose2d):
                total += 2 * inputs[0].numel() * module.out_channels // module.groups * kernel
            else:
                total += 2 * output.numel() * module.in_channels // module.groups * kernel
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    hooks = [module.register_forward_hook(count) for module in network.modules()]
    size = spec.input
    with torch.no_grad():
        network(torch.zeros(1, size.channels, *size.size))
    for hook in hooks:
        hook.remove()
    return total


def roofline(
    spec: ModelSpec, results: list[dict[str, Any]], bf16_peak: float | None = None
) -> dict[str, Any]:
    """Each result as GFLOP/s, FP32 ones as a fraction of the SGEMM peak and every one as a
    fraction of the BF16 peak (`bf16_peak`, measured once per run by the caller); the best ratio
    to torch that any FP32 engine could reach here (the SGEMM peak over torch's achieved rate)."""
    flops = flops_per_image(spec)
    peak = sgemm_gflops()
    achieved = {
        f"{r['backend']} {r['precision']}": round(r["images_per_s"] * flops / 1e9, 1)
        for r in results
    }
    fp32 = {name: value for name, value in achieved.items() if name.endswith(" fp32")}
    torch_gflops = achieved.get("torch fp32")
    return {
        "mflops_per_image": round(flops / 1e6, 1),
        "sgemm_peak_gflops": round(peak, 1),
        "bf16_gemm_peak_gflops": round(bf16_peak, 1) if bf16_peak else None,
        "achieved_gflops": achieved,
        "fraction_of_peak": {name: round(value / peak, 3) for name, value in fp32.items()},
        "fraction_of_bf16_peak": {
            name: round(value / bf16_peak, 3) for name, value in achieved.items()
        }
        if bf16_peak
        else None,
        "max_ratio_to_torch_fp32_at_peak": round(peak / torch_gflops, 2) if torch_gflops else None,
    }
