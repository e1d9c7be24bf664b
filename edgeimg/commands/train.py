"""`edgeimg train` and `edgeimg evaluate`: fit a model plugin's network, score its weights."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from edgeimg.console import err, out, print_json
from edgeimg.plugins import get_registry


@click.command()
@click.argument("name")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="DICOM training data instead of synthetic phantom slices. Classifiers: one sub-folder "
    "per class (0/negative/absent/normal/no and 1/positive/present/lesion/yes). Segmentation "
    "and detection: CT images plus DICOM SEG objects that reference them.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the model's own).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data and weights.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Weights file to write (a .json of metadata goes next to it). Default: ./NAME.safetensors",
)
@click.option("--limit", type=click.IntRange(min=2), hidden=True, help="Cap the data (checks).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def train(
    name: str,
    data_dir: Path | None,
    epochs: int | None,
    seed: int,
    out: Path | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Train model NAME from scratch and write safetensors weights plus JSON metadata."""
    from edgeimg.sdk.datasets import DataError
    from edgeimg.sdk.training import train as run_training

    spec = get_registry().model(name)
    try:
        result = run_training(
            spec,
            seed=seed,
            epochs=epochs,
            data_dir=data_dir,
            out=out,
            progress=not as_json,
            limit=limit,
        )
    except DataError as error:
        raise click.BadParameter(str(error), param_hint="--data") from None
    if as_json:
        print_json(result.as_dict())
        return
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    err.print(
        f"[green]trained[/] {escape(name)} in {result.seconds:.1f} s: best epoch "
        f"{result.best_epoch}/{result.epochs}, validation {escape(scores)}"
    )
    err.print(f"weights: {escape(str(result.weights))}  metadata: {escape(str(result.metadata))}")


@click.command()
@click.argument("name")
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Weights file to score (default: the weights the plugin ships).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the held-out set.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def evaluate(name: str, weights: Path | None, seed: int, as_json: bool) -> None:
    """Score model NAME on a fresh synthetic held-out set drawn from SEED."""
    from edgeimg.sdk.training import WeightsNotFound
    from edgeimg.sdk.training import evaluate as run_evaluation

    spec = get_registry().model(name)
    try:
        result = run_evaluation(spec, weights=weights, seed=seed)
    except WeightsNotFound as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{name}: held-out seed {seed}, {result['n']} slices")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, value in result["metrics"].items():
        table.add_row(metric, f"{value:.4f}")
    out.print(table)
