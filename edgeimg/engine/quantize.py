"""INT8 by explicit quantization: a QDQ ONNX that ONNX Runtime and TensorRT both run.

Signed INT8, per-channel symmetric weights, MinMax calibration over the calibration batches.
Activations are symmetric for TensorRT (it requires zero points of 0); for ONNX Runtime on a CPU
they may be asymmetric, which lets ReLU fold into QLinearConv (about 1.3x faster on small CNNs).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def _reader(input_names: list[str], batches: Iterable[tuple[np.ndarray, ...]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds one calibration batch per call, then None."""

        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else dict(zip(input_names, batch, strict=True))

    return Reader()


def _prepare(onnx_path: Path, target: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, folding) where the graph allows it.

    Symbolic shape inference gives up on some graphs (dynamic shapes computed at run time);
    ONNX shape inference alone is then enough for the quantizer.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(onnx_path), str(target), skip_symbolic_shape=skip_symbolic)
            return target
        except Exception:  # the next, simpler pre-processing, then the graph as exported
            _remove_symbolic_leftover()
            continue
    return onnx_path


SYMBOLIC_LEFTOVER = "sym_shape_infer_temp.onnx"
"""ORT's symbolic shape inference saves its partial graph here, in the working directory, when
it gives up; nobody asked for that file."""


def _remove_symbolic_leftover() -> None:
    leftover = Path(SYMBOLIC_LEFTOVER)
    for path in (leftover, *leftover.parent.glob(f"{SYMBOLIC_LEFTOVER}*.data")):
        path.unlink(missing_ok=True)


def quantize_qdq(
    onnx_path: Path,
    target: Path,
    input_names: list[str],
    batches: Iterable[tuple[np.ndarray, ...]],
    symmetric_activations: bool = True,
) -> Path:
    """Write the QDQ INT8 version of `onnx_path` to `target`, calibrated on `batches`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        prepared = _prepare(onnx_path, Path(scratch) / "prepared.onnx")
        quantize_static(
            str(prepared),
            str(target),
            _reader(input_names, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={
                "ActivationSymmetric": symmetric_activations,
                "WeightSymmetric": True,
            },
        )
    return target
