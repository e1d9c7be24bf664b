"""The torch side of an engine: the FP32 network with its weights, and reference data."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.engine.errors import EngineError
from edgeimg.sdk.model import ModelSpec


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (engines and weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def implementation(spec: ModelSpec) -> Any:
    """The model's implementation object; an EngineError when its plugin cannot import it."""
    try:
        return spec.load()(spec)
    except (ImportError, AttributeError) as error:
        raise EngineError(
            f"model {spec.name!r}: cannot import {spec.implementation}: {error}"
        ) from None


def load_network(spec: ModelSpec) -> tuple[Any, Path]:
    """The FP32 torch network with the shipped weights (eval mode, CPU) and the weights path."""
    from edgeimg.sdk.training import WeightsNotFound
    from edgeimg.sdk.training import load_network as load_trained

    implementation(spec)
    try:
        network = load_trained(spec)
    except WeightsNotFound as error:
        raise EngineError(str(error)) from None
    return network, Path(spec.weights_path())


def as_arrays(inputs: Any) -> tuple[np.ndarray, ...]:
    """A batch's inputs (tensor, array or tuple of them) as a tuple of numpy arrays."""
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    return tuple(x.numpy() if hasattr(x, "numpy") else np.asarray(x) for x in inputs)


def split_item(impl: Any, batch: list[Any]) -> tuple[tuple[np.ndarray, ...], tuple]:
    """A dataset batch is (inputs..., targets...): one element per ONNX input, then targets."""
    count = len(impl.input_names)
    return as_arrays(tuple(batch[:count])), as_arrays(tuple(batch[count:]))


def heldout_batches(impl: Any, seed: int, batch: int, limit: int) -> list[list[Any]]:
    """Up to `limit` items of `impl.heldout(seed)`, collated into batches."""
    import torch

    dataset = impl.heldout(seed)
    subset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return list(torch.utils.data.DataLoader(subset, batch_size=batch, shuffle=False))


def reference_batches(
    impl: Any, seed: int, batch: int, limit: int
) -> list[tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]:
    """Held-out (inputs, targets) batches, as numpy arrays."""
    return [split_item(impl, items) for items in heldout_batches(impl, seed, batch, limit)]


def run_torch(network: Any, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The FP32 reference: the torch network on CPU, outputs as numpy."""
    import torch

    with torch.inference_mode():
        outputs = network(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return tuple(o.detach().float().numpy() for o in outputs)
