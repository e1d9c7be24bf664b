"""The one training loop every model plugin uses: seeded, AdamW, best-by-validation, safetensors.

A checkpoint is a safetensors file of the network's state dict plus a JSON file of metadata next
to it (same name, `.json`). Nothing is ever pickled, so weights are safe to ship and to load.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, Subset

from edgeimg.console import err
from edgeimg.errors import ContractError
from edgeimg.sdk.implementation import provides

if TYPE_CHECKING:
    from edgeimg.sdk.implementation import ModelImplementation
    from edgeimg.sdk.model import ModelSpec


class WeightsNotFound(FileNotFoundError):
    """A model's weights file does not exist; the message says how to make it."""


@dataclass
class TrainResult:
    """What a training run produced and how well it did on its validation set."""

    model: str
    seed: int
    epochs: int
    best_epoch: int
    metrics: dict[str, float]
    seconds: float
    weights: Path
    metadata: Path
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["weights"] = str(self.weights)
        document["metadata"] = str(self.metadata)
        return document


def implementation_for(spec: ModelSpec) -> ModelImplementation:
    """Instantiate the spec's implementation (this imports the plugin's torch code)."""
    return spec.load()(spec)


def as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    """Networks return a tensor or a tuple of tensors; the core always handles a tuple."""
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _unwrap(targets: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Items are (inputs, *targets): loss sees one tensor, or a tuple when there are several."""
    return targets[0] if len(targets) == 1 else tuple(targets)


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(limit))


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def predict(
    network: torch.nn.Module, dataset: Dataset, batch_size: int = 64
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Raw outputs and targets over a whole dataset, each concatenated along the batch axis."""
    network.eval()
    outputs: list[list[np.ndarray]] = []
    targets: list[list[np.ndarray]] = []
    for inputs, *target in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        for index, tensor in enumerate(as_tuple(network(inputs))):
            if len(outputs) <= index:
                outputs.append([])
            outputs[index].append(tensor.numpy())
        for index, tensor in enumerate(as_tuple(target)):
            if len(targets) <= index:
                targets.append([])
            targets[index].append(tensor.numpy())
    return [np.concatenate(o) for o in outputs], [np.concatenate(t) for t in targets]


@torch.no_grad()
def validation_loss(
    implementation: ModelImplementation, network: torch.nn.Module, dataset: Dataset
) -> float:
    """Mean `loss()` over the validation set in eval mode: what a spec without a metric keeps."""
    network.eval()
    total, count = 0.0, 0
    loader = DataLoader(dataset, batch_size=implementation.batch_size, shuffle=False)
    for inputs, *targets in loader:
        loss = implementation.loss(network(inputs), _unwrap(targets))
        total += float(loss) * len(inputs)
        count += len(inputs)
    return total / max(count, 1)


def score_epoch(
    spec: ModelSpec,
    implementation: ModelImplementation,
    network: torch.nn.Module,
    dataset: Dataset,
) -> tuple[float, dict[str, float]]:
    """(value to maximise, validation metrics) after an epoch.

    With `spec.metric`, the value is that metric of `metrics()`; without one it is minus the
    mean validation loss, which is also reported as `val_loss`.
    """
    metrics: dict[str, float] = {}
    if spec.metric or provides(implementation, "metrics"):
        outputs, targets = predict(network, dataset)
        metrics = dict(implementation.metrics(outputs, targets))
    if not spec.metric:
        metrics["val_loss"] = validation_loss(implementation, network, dataset)
        return -metrics["val_loss"], metrics
    if spec.metric not in metrics:
        names = ", ".join(sorted(metrics)) or "none"
        raise ContractError(
            f"model {spec.name!r} names metric {spec.metric!r} but metrics() returns {names}; "
            "fix ModelSpec.metric or metrics()"
        )
    return float(metrics[spec.metric]), metrics


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
        transient=False,
    )


def default_out(spec: ModelSpec) -> Path:
    """Where `train` writes when no --out is given: the current directory, never shipped weights."""
    return Path(f"{spec.name}.safetensors")


def metadata_path(weights: Path) -> Path:
    """The JSON metadata that travels with a weights file."""
    return Path(weights).with_suffix(".json")


def save_checkpoint(network: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> Path:
    """Write the state dict as safetensors, the metadata as JSON next to it; return the JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in network.state_dict().items()}
    header = {"model": str(metadata["model"]), "version": str(metadata["version"])}
    save_file(tensors, str(path), metadata=header)
    path.chmod(0o644)  # safetensors creates 0600; shipped weights must be readable by all
    json_path = metadata_path(path)
    json_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return json_path


def train(
    spec: ModelSpec,
    *,
    seed: int = 0,
    epochs: int | None = None,
    data_dir: Path | None = None,
    out: Path | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> TrainResult:
    """Train the spec's network from scratch and write its best checkpoint.

    Deterministic for a seed: same seed, same data, same weights. `limit` caps the training and
    validation sets (quick checks and tests). The kept checkpoint is the epoch with the best
    validation value of `spec.metric`, or the lowest validation loss for a spec without one.
    """
    implementation = implementation_for(spec)
    epochs = epochs if epochs is not None else implementation.epochs
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    out = Path(out) if out is not None else default_out(spec)
    generator = _seed_everything(seed)
    train_set, val_set = implementation.datasets(seed, data_dir)
    train_set, val_set = _limit(train_set, limit), _limit(val_set, limit)
    network = implementation.build()
    optimizer = torch.optim.AdamW(
        network.parameters(),
        lr=implementation.learning_rate,
        weight_decay=implementation.weight_decay,
    )
    loader = DataLoader(
        train_set,
        batch_size=implementation.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=0,
    )
    total_steps = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=implementation.learning_rate, total_steps=total_steps, pct_start=0.15
    )
    best_value, best_epoch, best_metrics = -math.inf, 0, {}
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(f"train {spec.name}", total=total_steps, loss="-", metric="")
        for epoch in range(1, epochs + 1):
            network.train()
            running = 0.0
            logged: dict[str, float] = {}
            for step, (inputs, *targets) in enumerate(loader, start=1):
                logs = implementation.train_step(network, inputs, _unwrap(targets), optimizer)
                scheduler.step()
                for key, value in logs.items():
                    logged[key] = logged.get(key, 0.0) + value
                running = logged["loss"]
                bar.update(task, advance=1, loss=f"{running / step:.4f}")
            value, metrics = score_epoch(spec, implementation, network, val_set)
            losses = {key: value / len(loader) for key, value in logged.items()}
            history.append({"epoch": epoch, **losses, **metrics})
            if value > best_value:
                best_value, best_epoch, best_metrics = value, epoch, metrics
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            shown, best = (value, best_value) if spec.metric else (-value, -best_value)
            summary = f"val {spec.metric or 'loss'} {shown:.4f} (best {best:.4f})"
            bar.update(task, metric=summary)
            if progress:
                bar.console.print(
                    f"epoch {epoch}/{epochs}  loss {running / len(loader):.4f}  {summary}"
                )
    seconds = time.perf_counter() - started
    network.load_state_dict(best_state)
    metadata = {
        "model": spec.name,
        "version": spec.version,
        "seed": seed,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "data": _describe_data(data_dir, train_set, val_set),
        "validation_metrics": best_metrics,
        "history": history,
        "training_seconds": round(seconds, 2),
        "torch_version": torch.__version__,
        "hyperparameters": {
            "optimizer": "AdamW",
            "learning_rate": implementation.learning_rate,
            "weight_decay": implementation.weight_decay,
            "batch_size": implementation.batch_size,
            "schedule": "one-cycle",
            **{key: getattr(implementation, key) for key in implementation.extra_hyperparameters},
        },
        "input": spec.input.as_dict(),
    }
    json_path = save_checkpoint(network, out, metadata)
    return TrainResult(
        model=spec.name,
        seed=seed,
        epochs=epochs,
        best_epoch=best_epoch,
        metrics=best_metrics,
        seconds=seconds,
        weights=out,
        metadata=json_path,
        history=history,
    )


def _describe_data(data_dir: Path | None, train_set: Dataset, val_set: Dataset) -> dict[str, Any]:
    source = f"DICOM folder {data_dir}" if data_dir else "synthetic phantom slices (edgeimg.synth)"
    return {"source": source, "train": len(train_set), "validation": len(val_set)}


def load_network(spec: ModelSpec, weights: Path | None = None) -> torch.nn.Module:
    """The spec's network in eval mode with its weights: the shipped ones unless given others."""
    path = Path(weights) if weights is not None else spec.weights_path()
    if path is None:
        raise WeightsNotFound(
            f"model {spec.name!r} ships no weights; pass --weights FILE "
            f"(make one with `edgeimg train {spec.name} --out FILE`)"
        )
    if not path.is_file():
        raise WeightsNotFound(
            f"no weights for model {spec.name!r} at {path}; "
            f"make them with `edgeimg train {spec.name} --out {path}`"
        )
    network = implementation_for(spec).build()
    network.load_state_dict(load_file(str(path)))
    return network.eval()


def evaluate(spec: ModelSpec, *, weights: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Metrics of trained weights on a fresh synthetic held-out set drawn from `seed`."""
    implementation = implementation_for(spec)
    network = load_network(spec, weights)
    dataset = implementation.heldout(seed)
    outputs, targets = predict(network, dataset)
    metrics = implementation.metrics(outputs, targets)
    return {"model": spec.name, "seed": seed, "n": len(dataset), "metrics": metrics}
