"""`edgeimg queue`: what the listener holds (series, jobs, forwards), and retrying what failed."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from edgeimg.console import out, print_json
from edgeimg.serve.spool import DEFAULT_SPOOL


@click.group(invoke_without_command=True)
@click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SPOOL,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def queue(ctx: click.Context, spool: Path, as_json: bool) -> None:
    """What the listener holds: series received, complete, pending, running, done, failed, and
    revised (done, with results that superseded earlier ones after more instances came)."""
    ctx.obj = spool
    if ctx.invoked_subcommand is not None:
        return
    db = _open_queue(spool)
    series, failures, waiting = db.series_summary(), db.failures(), db.waiting()
    if as_json:
        print_json({"series": series, "failures": failures, "waiting": waiting})
        return
    table = Table(title=f"edgeimg queue ({spool})")
    for column in ("series", "modality", "instances", "state", "jobs", "forwards"):
        table.add_column(column)
    for item in series:
        table.add_row(
            item["series_uid"],
            item["modality"] or "",
            str(item["instances"]),
            item["state"],
            _states(item["jobs"]),
            _states(item["forwards"]),
        )
    out.print(table)
    for job in waiting:
        due = max(0.0, job["next_try"] - time.time())
        reason = escape(str(job["reason"]))
        out.print(
            f"[yellow]waiting[/] job:{job['id']} {job['model']} {job['series_uid']}: "
            f"{reason} (attempt {job['attempts']}, next try in {due:.0f} s)",
            soft_wrap=True,
        )
    for failure in failures:
        out.print(
            f"[red]failed[/] {failure['kind']}:{failure['id']} {escape(failure['target'])}: "
            f"{escape(str(failure['error']))}  (edgeimg queue retry "
            f"{failure['kind']}:{failure['id']})",
            soft_wrap=True,
        )


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {count}" for state, count in sorted(counts.items()))


def _open_queue(spool: Path):
    from edgeimg.serve.queue import Queue
    from edgeimg.serve.spool import QUEUE_NAME

    if not (spool / QUEUE_NAME).is_file():
        raise click.ClickException(f"no queue in {spool} (has `edgeimg serve --spool` run there?)")
    return Queue(spool / QUEUE_NAME)


@queue.command()
@click.argument("ident", metavar="ID")
@click.option("--spool", "spool_dir", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def retry(spool: Path, ident: str, spool_dir: Path | None) -> None:
    """Re-queue a failed job or forward: ID, job:ID or forward:ID."""
    kind = _open_queue(spool_dir or spool).retry(ident)
    if kind is None:
        raise click.ClickException(f"no failed job or forward {ident!r}")
    out.print(f"{kind} {escape(ident)} queued again")
