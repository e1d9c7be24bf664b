"""`edgeimg echo` and `edgeimg send`: C-ECHO and C-STORE to a peer named AET@HOST:PORT."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgeimg.console import err, out
from edgeimg.files import dicom_files
from edgeimg.net import DEFAULT_CALLING_AET, NetworkError, PeerError, SendResult, parse_peer
from edgeimg.net import echo as c_echo
from edgeimg.net import send as c_store
from edgeimg.privacy import scrub


def peer_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback: one AET@HOST:PORT, or for a repeated option a list of destinations
    (AET@HOST:PORT or a DICOMweb base URL); a bad one is a usage error naming it."""
    if value is None:
        return None
    try:
        if isinstance(value, tuple):
            return [_destination(item) for item in value]
        return parse_peer(value)
    except (PeerError, ValueError) as error:
        raise click.BadParameter(str(error)) from None


def _destination(text: str) -> Any:
    """A `--forward`: `AET@HOST:PORT`, or a DICOMweb base URL (STOW-RS)."""
    from edgeimg.dicomweb import check_url, is_url

    return check_url(text) if is_url(text) else parse_peer(text)


calling_option = click.option(
    "--aet",
    "calling",
    default=DEFAULT_CALLING_AET,
    show_default=True,
    help="Our (calling) AE title.",
)


@click.command()
@click.argument("peer", callback=peer_callback)
@calling_option
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1))
def echo(peer, calling: str, timeout: float) -> None:
    """C-ECHO a peer (AET@HOST:PORT): exit 0 if it answers with success."""
    try:
        ok, message = c_echo(peer, calling, timeout)
    except NetworkError as error:
        raise click.ClickException(str(error)) from None
    out.print(("[green]ok[/] " if ok else "[red]failed[/] ") + escape(message), soft_wrap=True)
    sys.exit(0 if ok else 1)


@click.command()
@click.argument("peer", callback=peer_callback)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@calling_option
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1))
def send(peer, paths: tuple[Path, ...], calling: str, timeout: float) -> None:
    """C-STORE DICOM files and folders (recursively) to a peer (AET@HOST:PORT)."""
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    files, passed_over = dicom_files(paths)
    if passed_over:
        err.print(f"passed over {len(passed_over)} files that are not DICOM")
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("send", total=len(files))

        def advance(result: SendResult) -> None:
            progress.advance(task)
            if result.error:
                reason = escape(scrub(result.error))
                progress.console.print(
                    f"[red]failed[/] {escape(str(result.path))}: {reason}", soft_wrap=True
                )

        try:
            results = c_store(peer, files, calling, timeout, advance, fail_fast=True)
        except NetworkError as error:
            raise click.ClickException(str(error)) from None
    _summary(results)
    sys.exit(0 if results and all(result.ok for result in results) else 1)


def _summary(results: list[SendResult]) -> None:
    counts: dict[str, int] = {}
    for result in results:
        key = "unreadable/not sent" if result.status is None else f"0x{result.status:04X}"
        counts[key] = counts.get(key, 0) + 1
    for result in results:
        if result.status is not None and not result.ok:
            out.print(f"[red]status 0x{result.status:04X}[/] {escape(str(result.path))}")
    sent = sum(result.ok for result in results)
    detail = ", ".join(f"{key}: {count}" for key, count in sorted(counts.items()))
    out.print(f"{sent} of {len(results)} stored ({detail or 'no files'})")
