"""What a Triton model says about itself: tensor signature and the verified engine it runs.

Both `export-triton` (config.pbtxt) and `edgeimg host` (PyTriton) publish the engine's manifest
facts as model config `parameters`, so the `triton` backend can prove, before it trusts a
remote model, that it runs the very engine that was verified, for these weights.
"""

from __future__ import annotations

from typing import Any

#: config parameter → manifest field
PARAMETERS = {
    "edgeimg_key": "key",
    "edgeimg_model": "model",
    "edgeimg_model_version": "model_version",
    "edgeimg_weights_sha256": "weights_sha256",
    "edgeimg_precision": "precision",
    "edgeimg_backend": "backend",
}
#: Triton data type of every tensor edgeimg engines take and give (inputs are scaled floats)
DATA_TYPE = "TYPE_FP32"


def identity(manifest: dict[str, Any]) -> dict[str, str]:
    """The parameters a Triton model publishes for the engine behind it."""
    return {name: str(manifest[field]) for name, field in PARAMETERS.items()}


def dims(shape: list[Any]) -> list[int]:
    """Triton dims of an ONNX shape: the batch axis dropped, named (dynamic) axes as -1; one
    value per item is dims [1] (Triton wants dims; an exported config reshapes it to [])."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape[1:]] or [1]


def scalar_outputs(manifest: dict[str, Any]) -> list[str]:
    """Outputs with one value per item: Triton may hand them back as [batch, 1]."""
    return [item["name"] for item in manifest["outputs"] if len(item["shape"]) == 1]


def signature(manifest: dict[str, Any]) -> dict[str, list[tuple[str, list[int]]]]:
    """Input and output names with their Triton dims, in the engine's order."""
    return {
        kind: [(item["name"], dims(item["shape"])) for item in manifest[kind]]
        for kind in ("inputs", "outputs")
    }


def max_batch(manifest: dict[str, Any]) -> int:
    """The largest batch every input's profile accepts (Triton's max_batch_size)."""
    return min(shapes[2][0] for shapes in manifest["profiles"].values())
