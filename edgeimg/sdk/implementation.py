"""The contract between the core and a model plugin's implementation.

A ModelSpec names its implementation ("package.module:Class"); the core instantiates it with the
spec and calls these methods. Everything torch lives behind this interface, so the core's
training loop, engine builder, `run` and `serve` work the same for every model family.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeimg.errors import ContractError

if TYPE_CHECKING:
    import torch

    from edgeimg.sdk.model import ModelSpec


#: which commands call each method of the contract
NEEDED_BY = {
    "build": "every command that loads the network",
    "example_inputs": "build-engine",
    "datasets": "train",
    "heldout": "evaluate and build-engine (verification; run and serve build engines too)",
    "loss": "train",
    "metrics": "evaluate and build-engine (verification), and train when the spec names a metric",
    "postprocess": "run and serve",
    "target": "train",
    "read_folder": "train --data",
}
#: the SDK base class that provides every method but `build()`, by ModelSpec task
TASK_BASES = {
    "classify": "SliceClassifier",
    "segment": "Segmenter",
    "detect": "Detector",
    "series-classify": "SequenceClassifier",
    "enhance": "Enhancer",
    "anomaly": "Enhancer",
}


def _command() -> str:
    """The running edgeimg command, when there is one (a library caller has none)."""
    import click

    context = click.get_current_context(silent=True)
    return f"`edgeimg {context.info_name}`" if context and context.info_name else ""


def missing(implementation: Any, method: str) -> ContractError:
    """The one-line error for a contract method the plugin does not provide."""
    spec = implementation.spec
    where = f"model {spec.name!r} ({spec.implementation})"
    command = _command()
    needs = f"{command} needs it" if command else f"needed by {NEEDED_BY.get(method, 'edgeimg')}"
    base = TASK_BASES.get(spec.task)
    if method == "build":
        fix = "write it: return your torch.nn.Module (no base class provides the network)"
    elif base:
        fix = f"subclass edgeimg.sdk.{base}, which provides it, or write it"
    else:
        fix = "write it"
    return ContractError(f"{where} has no {method}(): {needs}; {fix}")


def provides(implementation: Any, method: str) -> bool:
    """Whether the implementation (or a base class below ModelImplementation) defines `method`."""
    return getattr(type(implementation), method) is not getattr(ModelImplementation, method)


class ModelImplementation:
    """Subclass in a plugin; override what your model family needs.

    Prefer a task base class from `edgeimg.sdk` (SliceClassifier, Segmenter, Detector,
    SequenceClassifier, Enhancer): they provide everything but `build()`. A method left out
    raises a ContractError naming the command that needs it.
    """

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
        raise missing(self, "build")

    def example_inputs(self, batch: int = 2) -> tuple[np.ndarray, ...]:
        """Inputs of the right dtype and shape for export and shape checks."""
        raise missing(self, "example_inputs")

    def datasets(
        self, seed: int, data_dir: Path | None = None
    ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """(train, validation) datasets of (inputs, *targets) items: synthetic, or from data_dir."""
        raise missing(self, "datasets")

    def heldout(self, seed: int) -> torch.utils.data.Dataset:
        """A fresh synthetic held-out set made from the seed, for `evaluate` and engine checks."""
        raise missing(self, "heldout")

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The training loss for a batch: targets is one tensor, or a tuple if items have more."""
        raise missing(self, "loss")

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

        Each array is concatenated along the batch axis (see `edgeimg.sdk.training.predict`).
        """
        raise missing(self, "metrics")

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        """Raw outputs of one batch to per-item results (probability, mask, boxes, image...)."""
        raise missing(self, "postprocess")

    def compare(self, current: dict[str, Any], priors: list[dict[str, Any]]) -> dict[str, Any]:
        """For models that declare `ModelSpec.priors`: what changed since the prior studies.

        `current` is this series' result line; `priors` holds the model's own result line on
        each series of the prior studies `serve` fetched, newest study first (empty when the
        patient has none). The dict is recorded as the result's "comparison"; by default none.
        """
        return {}
