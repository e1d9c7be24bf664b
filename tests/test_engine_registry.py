"""Every registered model exports, compiles and verifies on ONNX Runtime (FP32).

Parametrized over the installed plugins; a model whose implementation cannot be imported or
whose weights are not trained yet is skipped with that reason. Sequence and enhancement models
are marked slow: their synthetic held-out series, or 512 x 512 slices run twice, take tens of
seconds on a small CPU.
"""

from __future__ import annotations

import pytest

from edgeimg.engine import EngineError
from edgeimg.plugins import load_registry, reset_registry
from tests.test_engine_fakes import build

REGISTRY = load_registry()
NAMES = [
    pytest.param(
        name, marks=[pytest.mark.slow] if spec.input.sequence or spec.task == "enhance" else []
    )
    for name, spec in sorted(REGISTRY.models.items())
]


@pytest.mark.parametrize("name", NAMES)
def test_registered_model_round_trip(name, tmp_path):
    reset_registry(REGISTRY)
    spec = REGISTRY.model(name)
    try:
        spec.load()
    except Exception as error:
        pytest.skip(f"{name}: implementation {spec.implementation} does not import: {error}")
    weights = spec.weights_path()
    if weights is None or not weights.is_file():
        pytest.skip(f"{name}: no trained weights at {weights}")
    try:
        built = build(name, "onnxruntime", "fp32", engines_dir=tmp_path)
    except EngineError as error:
        pytest.fail(str(error))
    verification = built.manifest["verification"]
    assert verification["passed"], verification
    assert built.manifest["inputs"][0]["shape"][0] == "batch"
