"""The contract between the core and a model plugin's implementation.

A ModelSpec names its implementation ("package.module:Class"); the core instantiates it with the
spec and calls these methods. Everything torch lives behind this interface, so the core's
training loop, engine builder, `run` and `serve` work the same for every model family.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from edgeimg.model import ModelSpec


class ModelImplementation:
    """Subclass in a plugin; override what your model family needs."""

    #: ONNX input and output names, and their dynamic axes (batch; sequence for series models)
    input_names: tuple[str, ...] = ("image",)
    output_names: tuple[str, ...] = ("output",)
    dynamic_axes: dict[str, dict[int, str]] = {"image": {0: "batch"}, "output": {0: "batch"}}
    #: training defaults for `edgeimg train` (AdamW with a one-cycle schedule)
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    #: settings of a custom `train_step` that the weights' metadata should record
    extra_hyperparameters: tuple[str, ...] = ()

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def build(self) -> torch.nn.Module:
        """A fresh network with random weights (the core loads safetensors into it)."""
        raise NotImplementedError

    def example_inputs(self, batch: int = 2) -> tuple[np.ndarray, ...]:
        """Inputs of the right dtype and shape for export and shape checks."""
        raise NotImplementedError

    def datasets(
        self, seed: int, data_dir: Path | None = None
    ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """(train, validation) datasets of (inputs, *targets) items: synthetic, or from data_dir."""
        raise NotImplementedError

    def heldout(self, seed: int) -> torch.utils.data.Dataset:
        """A fresh synthetic held-out set made from the seed, for `evaluate` and engine checks."""
        raise NotImplementedError

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The training loss for a batch: targets is one tensor, or a tuple if items have more."""
        raise NotImplementedError

    def train_step(
        self,
        network: torch.nn.Module,
        inputs: Any,
        targets: Any,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, float]:
        """One optimisation step of the training loop; returns the losses to log by name.

        "loss" is the one the progress bar shows. The default is supervised learning on
        `loss()`; override it for models with more than one network or optimizer (a GAN's
        discriminator), keeping the extra state on the implementation.
        """
        loss = self.loss(network(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        """Task metrics over a whole dataset: one array per network output and per target.

        Each array is concatenated along the batch axis (see `edgeimg.training.predict`).
        """
        raise NotImplementedError

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        """Raw outputs of one batch to per-item results (probability, mask, boxes, image...)."""
        raise NotImplementedError

    def compare(self, current: dict[str, Any], priors: list[dict[str, Any]]) -> dict[str, Any]:
        """For models that declare `ModelSpec.priors`: what changed since the prior studies.

        `current` is this series' result line; `priors` holds the model's own result line on
        each series of the prior studies `serve` fetched, newest study first (empty when the
        patient has none). The dict is recorded as the result's "comparison"; by default none.
        """
        return {}
