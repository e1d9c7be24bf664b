"""torch → ONNX with dynamic batch (and sequence) axes, checked before anything is built on it."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from edgeimg.engine.errors import EngineError
from edgeimg.engine.network import run_torch

OPSET = 17
#: bump when `export_onnx` changes what it writes: engines of the old export are then rebuilt
EXPORT_VERSION = 1
#: ONNX Runtime FP32 against torch FP32 on the export check inputs
EXPORT_ATOL = 1e-4
EXPORT_RTOL = 1e-3


def export_onnx(network: Any, impl: Any) -> bytes:
    """The network as ONNX bytes (the TorchScript exporter: deterministic, no onnxscript)."""
    import torch

    example = tuple(torch.from_numpy(a) for a in impl.example_inputs(2))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            example,
            buffer,
            input_names=list(impl.input_names),
            output_names=list(impl.output_names),
            dynamic_axes=dict(impl.dynamic_axes),
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def check_onnx(onnx_bytes: bytes, network: Any, impl: Any) -> float:
    """onnx.checker, then ONNX Runtime against torch at a batch size the export did not see."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(onnx_bytes)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise EngineError(f"the exported ONNX is invalid: {error}") from None
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    arrays = impl.example_inputs(3)
    feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}
    got = session.run(None, feeds)
    want = run_torch(network, arrays)
    worst = max(
        float(np.max(np.abs(g - w))) if g.size else 0.0 for g, w in zip(got, want, strict=True)
    )
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape or not np.allclose(g, w, atol=EXPORT_ATOL, rtol=EXPORT_RTOL):
            raise EngineError(
                f"ONNX Runtime disagrees with torch on the exported graph "
                f"(max abs diff {worst:.3g})"
            )
    return worst
