"""`edgeimg synth`: write a synthetic CT study with ground truth, for demos and pipeline tests."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeimg.console import err, out, print_json

MIN_SLICES = 4
"""edgeimg.synth.PERSIST_MIN, repeated so that `--help` does not import numpy."""


def _check_out(path: Path, force: bool) -> None:
    """Refuse a file, or a non-empty directory unless --force: never mix two studies silently."""
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{path} exists and is not a directory", param_hint="OUT")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise click.BadParameter(
            f"{path} is not empty; choose a new directory or add --force to write into it",
            param_hint="OUT",
        )


@click.command()
@click.argument("out_dir", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--series", type=click.IntRange(1, 999), default=3, show_default=True)
@click.option(
    "--slices",
    type=click.IntRange(MIN_SLICES, 9999),
    default=32,
    show_default=True,
)
@click.option(
    "--size",
    type=click.IntRange(32, 2048),
    default=512,
    show_default=True,
    help="Rows and columns of every slice.",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option(
    "--low-dose/--no-low-dose",
    default=False,
    show_default=True,
    help="Also write a low-dose copy of each series (series-NNN-lowdose/).",
)
@click.option(
    "--dose-fraction",
    type=click.FloatRange(0.01, 1.0),
    default=0.25,
    show_default=True,
    help="Dose of the low-dose copies relative to full dose.",
)
@click.option("--noisy", is_flag=True, help="Give the primary series full-dose noise.")
@click.option(
    "--enhanced",
    is_flag=True,
    help="Write each series as one multi-frame Enhanced CT file (series-NNN/enhanced.dcm).",
)
@click.option("--force", is_flag=True, help="Write into OUT even if it is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def synth(
    out_dir: Path,
    series: int,
    slices: int,
    size: int,
    seed: int,
    low_dose: bool,
    dose_fraction: float,
    noisy: bool,
    enhanced: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Write a synthetic abdominal CT study to OUT, with lesion ground truth.

    One patient, one study, one folder of slices per series, lesion masks and
    ground_truth.json; the same seed always writes the same files (docs/synth.md).
    """
    from edgeimg.synth.dicom import count_files, write_study

    _check_out(out_dir, force)
    total = count_files(series, slices, low_dose)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task(
                "writing frames" if enhanced else "writing slices", total=total
            )
            info = write_study(
                out_dir,
                series=series,
                slices=slices,
                size=size,
                seed=seed,
                noisy=noisy,
                pairs=low_dose,
                dose_fraction=dose_fraction,
                enhanced=enhanced,
                progress=lambda n: progress.advance(task, n),
            )
    except OSError as error:
        raise click.ClickException(f"cannot write {out_dir}: {error}") from None

    if as_json:
        print_json(info.as_dict())
        return
    table = Table(title=f"{info.files} DICOM files in {escape(str(out_dir))}")
    for column in ("folder", "slices", "dose", "lesion", "persistent"):
        table.add_column(column)
    for item in info.series:
        table.add_row(
            item.folder,
            str(item.slices),
            f"{item.dose_fraction:.0%}",
            "yes" if item.lesion_present else "no",
            "yes" if item.persistent else "no",
        )
    out.print(table)
    out.print(f"ground truth: {escape(str(info.ground_truth))}")
