"""How close an engine is to what this CPU can compute: FLOPs per image against measured peak.

The peak is ONNX Runtime's own SGEMM on a large square matrix product, with the session options
our engines use (one intra-op thread per physical core): no convolution of the same FLOPs runs
faster on this machine. A model's FLOPs are counted from its convolutions and linear layers
(multiply and add count as two), which is where nearly all of a CNN's work is.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeimg.model import ModelSpec

GEMM_SIZE = 1024
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


def sgemm_gflops(size: int = GEMM_SIZE, seconds: float = GEMM_SECONDS) -> float:
    """ONNX Runtime FP32 matrix-product throughput in GFLOP/s (best of repeated runs)."""
    import onnxruntime as ort

    from edgeimg.backends.onnxruntime import session_options

    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(_gemm_model(size), options, providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)}
    session.run(None, feeds)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def flops_per_image(spec: ModelSpec) -> float:
    """FLOPs of one forward pass on one input, from its Conv2d/ConvTranspose2d/Linear layers."""
    import torch
    from torch import nn

    from edgeimg.training import load_network

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


def roofline(spec: ModelSpec, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each FP32 result as GFLOP/s and a fraction of the SGEMM peak; the best ratio to torch
    that any engine could reach here (the peak over torch's achieved rate)."""
    flops = flops_per_image(spec)
    peak = sgemm_gflops()
    achieved = {
        f"{r['backend']} {r['precision']}": round(r["images_per_s"] * flops / 1e9, 1)
        for r in results
        if r["precision"] == "fp32"
    }
    torch_gflops = achieved.get("torch fp32")
    return {
        "mflops_per_image": round(flops / 1e6, 1),
        "sgemm_peak_gflops": round(peak, 1),
        "achieved_gflops": achieved,
        "fraction_of_peak": {name: round(value / peak, 3) for name, value in achieved.items()},
        "max_ratio_to_torch_fp32_at_peak": round(peak / torch_gflops, 2) if torch_gflops else None,
    }
