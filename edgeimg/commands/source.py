"""`run --from PEER --query KEY=VALUE`: the options, and fetching into a temp folder for run.

Kept out of run.py so that `run` only gains a decorator and one call: what a peer returns goes
through exactly the code a folder on the command line goes through.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgeimg.console import err
from edgeimg.net import DEFAULT_CALLING_AET


def source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The `--from` group of options (their values reach the command as keyword arguments)."""
    options = [
        click.option(
            "--from",
            "source",
            metavar="AET@HOST:PORT|URL",
            help="Query/retrieve inputs from a DICOM peer or a DICOMweb base URL "
            "(https://host/dicom-web) instead of PATHS.",
        ),
        click.option(
            "--query",
            multiple=True,
            metavar="KEY=VALUE",
            help="C-FIND/QIDO-RS match with --from: a DICOM keyword and a value or "
            "range (StudyDate=20260101-20260131, Modality=CT); repeatable.",
        ),
        click.option(
            "--retrieve",
            type=click.Choice(["auto", "get", "move"]),
            default="auto",
            show_default=True,
            help="With a DICOM peer: get (C-GET), move (C-MOVE to "
            "our store SCP), or auto: C-GET where offered.",
        ),
        click.option(
            "--aet",
            "calling_aet",
            default=DEFAULT_CALLING_AET,
            show_default=True,
            help="Our AE title with a DICOM peer (also the C-MOVE destination).",
        ),
        click.option(
            "--move-port",
            default=0,
            type=click.IntRange(0, 65535),
            help="Port of our C-MOVE store SCP; the peer must map --aet to it "
            "(default: a free port).",
        ),
        click.option(
            "--tls-ca",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="PEM CA bundle to verify an https --from against.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def fetch_inputs(
    paths: tuple[Path, ...], options: dict[str, Any], quiet: bool
) -> tuple[list[Path], list[dict[str, Any]]]:
    """The paths to run, and an error line per study or series that failed to arrive.

    Without `--from` these are PATHS as given. With it, the matches are retrieved into a temp
    folder that is removed when the command's context closes (after the results are written).
    Usage errors exit 2; a peer that cannot be reached or queried exits 1 with one line.
    """
    source, query = options["source"], options["query"]
    if source is None:
        if query:
            raise click.UsageError("--query needs --from")
        if not paths:
            raise click.UsageError("give PATHS to run on, or --from a peer with --query")
        return list(paths), []
    if paths:
        raise click.UsageError("give PATHS or --from, not both")
    if not query:
        raise click.UsageError("--from needs at least one --query KEY=VALUE")
    from edgeimg.net import NetworkError
    from edgeimg.retrieve import QueryError, parse_query

    try:
        keys = parse_query(query)
    except QueryError as error:
        raise click.UsageError(str(error)) from None
    folder = Path(tempfile.mkdtemp(prefix="edgeimg-retrieve-"))
    click.get_current_context().call_on_close(lambda: shutil.rmtree(folder, ignore_errors=True))
    try:
        failures = _fetch(source, keys, folder, options, quiet)
    except NetworkError as error:
        raise click.ClickException(str(error)) from None
    return [folder], failures


def _fetch(
    source: str, keys: dict[str, str], folder: Path, options: dict[str, Any], quiet: bool
) -> list[dict[str, Any]]:
    from edgeimg import dicomweb

    if dicomweb.is_url(source):
        try:
            client = dicomweb.Client.from_url(source, ca=options["tls_ca"])
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--from") from None
        with client, _Progress(quiet) as progress:
            return dicomweb.fetch(client, keys, folder, progress=progress.start)
    from edgeimg.net import PeerError, parse_peer
    from edgeimg.retrieve import find, retrieve

    try:
        peer = parse_peer(source)
    except PeerError as error:
        raise click.BadParameter(str(error), param_hint="--from") from None
    calling = options["calling_aet"]
    matches = find(peer, keys, calling)
    if not matches:
        raise click.ClickException(f"nothing at {peer} matches the query")
    if not quiet:
        err.print(f"{len(matches)} match(es) at {escape(str(peer))}")
    with _Progress(quiet) as progress:
        done = retrieve(
            peer,
            matches,
            folder,
            method=options["retrieve"],
            calling=calling,
            move_port=options["move_port"],
            progress=progress.start,
        )
    return done.failures


class _Progress:
    """A bar per study or series retrieved (instances arrived of those the peer reported)."""

    def __init__(self, quiet: bool) -> None:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.bars = Progress(*columns, console=err, disable=quiet or not err.is_terminal)

    def __enter__(self) -> _Progress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bars.__exit__(*exc_info)

    def start(self, match: Any, expected: int | None) -> Callable[[], None]:
        task = self.bars.add_task(f"retrieving {match.label}", total=expected)
        return lambda: self.bars.advance(task)
