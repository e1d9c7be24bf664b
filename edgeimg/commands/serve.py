"""`edgeimg serve`, `echo`, `send` and `queue`: the DICOM listener and its network tools."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeimg.commands.deid import load_or_create_key
from edgeimg.commands.options import triton_option
from edgeimg.commands.precision import precision_option
from edgeimg.commands.weights import use_weights_for, weights_option
from edgeimg.console import err, out, print_json
from edgeimg.files import dicom_files
from edgeimg.net import DEFAULT_CALLING_AET, NetworkError, PeerError, SendResult, parse_peer
from edgeimg.net import echo as c_echo
from edgeimg.net import send as c_store
from edgeimg.plugins import UnknownName, get_registry
from edgeimg.privacy import scrub
from edgeimg.serve.preassociation import ARTIM, PENDING_PER_HOST, PENDING_TOTAL

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_SPOOL = Path("spool")
AUDIT_NAME = "audit.jsonl"
DEID_KEY = "deid.key"


def _peer(ctx: click.Context, param: click.Parameter, value: Any):
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


ROUTING_TABLES = ("destination", "route")
_ROUTING = "edgeimg.serve.routing"


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """TOML: a `[serve]` table whose keys are named like the long options (`series-timeout`,
    `model`) becomes defaults, and flags given on the command line still win; `[[destination]]`
    and `[[route]]` tables become the routing (edgeimg.serve.routing). Unknown keys are an
    error naming the file, not a silent no-op."""
    from edgeimg.serve.routing import RoutingError, parse_routing

    if not value:
        return
    try:
        with open(value, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise click.BadParameter(f"cannot read {value}: {error}") from None
    if "serve" in data:
        extra = sorted(set(data) - {"serve", *ROUTING_TABLES})
        if extra:
            raise click.BadParameter(
                f"{value}: unknown table or key {extra[0]!r} (known: serve, "
                f"{', '.join(ROUTING_TABLES)})"
            )
        section = data["serve"]
    else:  # a flat file of settings, as before routing tables existed
        section = {key: item for key, item in data.items() if key not in ROUTING_TABLES}
    if not isinstance(section, dict):
        raise click.BadParameter(f"{value}: [serve] must be a table")
    names = {
        option.lstrip("-").replace("-", "_"): param.name
        for param in ctx.command.params
        for option in param.opts
        if param.name != "config"
    }
    unknown = [key for key in section if key.replace("-", "_") not in names]
    if unknown:
        raise click.BadParameter(f"{value}: unknown settings in [serve]: {', '.join(unknown)}")
    try:
        ctx.meta[_ROUTING] = parse_routing(data, value)
    except RoutingError as error:
        raise click.BadParameter(str(error)) from None
    ctx.default_map = {names[key.replace("-", "_")]: item for key, item in section.items()}


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_SPOOL = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="TOML file: [serve] defaults, [[destination]] and [[route]] tables (docs/serve.md).",
)
@click.option("--aet", required=True, help="Our AE title; the called AE title must match it.")
@click.option(
    "--port",
    default=11112,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on (0: any free port).",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--model", "models", multiple=True, help="Model to run on complete series.")
@click.option(
    "--forward",
    "forwards",
    multiple=True,
    callback=_peer,
    help="Send results to AET@HOST:PORT (C-STORE) or https://HOST/dicom-web (STOW-RS).",
)
@click.option(
    "--priors-from",
    callback=_peer,
    metavar="AET@HOST:PORT",
    help="Query/retrieve peer for the prior studies of models that declare `priors`.",
)
@click.option(
    "--priors-move-port",
    default=0,
    type=click.IntRange(0, 65535),
    help="Port of our C-MOVE store SCP for priors, for a peer without C-GET; the peer must "
    "map --aet to this host and port (default: C-GET only).",
)
@click.option("--allow", multiple=True, help="Calling AE title allowed (AET or AET@HOST).")
@click.option("--backend", default="auto", show_default=True, help="Engine backend for --model.")
@triton_option
@precision_option("Engine precision for --model.")
@click.option(
    "--spool",
    type=_SPOOL,
    default=DEFAULT_SPOOL,
    show_default=True,
    help="Where instances and the queue database live.",
)
@click.option(
    "--series-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds without a new instance before a series is complete.",
)
@click.option(
    "--complete-on-release",
    is_flag=True,
    help="A series is complete when the association that sent it is released.",
)
@click.option(
    "--max-associations",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="Associations served at once; more are rejected as busy.",
)
@click.option(
    "--artim",
    default=ARTIM,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a connection has to send its association request before it is closed.",
)
@click.option(
    "--max-pending",
    default=PENDING_TOTAL,
    show_default=True,
    type=click.IntRange(1),
    help="Connections still without an association request, in all; the oldest goes first.",
)
@click.option(
    "--max-pending-per-host",
    default=PENDING_PER_HOST,
    show_default=True,
    type=click.IntRange(1),
    help="The same, from one host. Neither kind takes an association slot.",
)
@click.option(
    "--min-free-mb",
    default=512.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Refuse instances (status A700) below this much free disk.",
)
@click.option("--tls-cert", type=_FILE, help="PEM certificate: serve DICOM over TLS 1.2+ only.")
@click.option("--tls-key", type=_FILE, help="PEM private key for --tls-cert.")
@click.option(
    "--tls-ca",
    type=_FILE,
    help="Require client certificates signed by this CA; and trust it for https --forward.",
)
@click.option(
    "--http",
    "http_address",
    metavar="[HOST:]PORT",
    help="Serve /metrics, /healthz, /readyz and a status page (loopback unless HOST is given).",
)
@click.option(
    "--http-token",
    envvar="EDGEIMG_HTTP_TOKEN",
    show_envvar=True,
    help="Bearer token for --http; required when HOST is not loopback (16+ characters).",
)
@click.option(
    "--http-show-phi",
    is_flag=True,
    help="Show patient name, ID, birth date and accession number on the status page.",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds an idle or stalled peer keeps its slot.",
)
@weights_option(multiple=True)
@click.pass_context
def serve(ctx: click.Context, **options: Any) -> None:
    """Listen for DICOM: store each instance durably, run the routed models on complete series,
    and forward their results.

    Stops on SIGTERM or Ctrl-C after the associations in flight have finished.
    """
    from edgeimg.audit import AuditLog
    from edgeimg.serve.config import ServeConfig
    from edgeimg.serve.listener import Listener
    from edgeimg.serve.metrics import ServeMetrics
    from edgeimg.serve.pipeline import Worker
    from edgeimg.serve.routing import Routing
    from edgeimg.serve.security import SecurityError, parse_allow, server_tls_context

    tls_ca = str(options["tls_ca"]) if options["tls_ca"] else None
    priors_from = str(options["priors_from"]) if options["priors_from"] else None
    routing = ctx.meta.get(_ROUTING, Routing()).with_flags(
        options["models"], [str(peer) for peer in options["forwards"]], tls_ca, priors_from
    )
    for name in routing.models:
        try:
            get_registry().model(name)
        except UnknownName as error:
            raise click.UsageError(str(error)) from None
    use_weights_for(list(routing.models), options["weights"])
    try:
        allow = parse_allow(options["allow"])
        tls = None
        if options["tls_cert"] or options["tls_key"]:
            if not (options["tls_cert"] and options["tls_key"]):
                raise SecurityError("--tls-cert and --tls-key go together")
            tls = server_tls_context(options["tls_cert"], options["tls_key"], options["tls_ca"])
        elif options["tls_ca"] and not any(
            str(f).startswith("https:") for f in options["forwards"]
        ):
            raise SecurityError("--tls-ca needs --tls-cert and --tls-key, or an https --forward")
    except SecurityError as error:
        raise click.UsageError(str(error)) from None
    http_address = _http_settings(options)
    config = ServeConfig(
        aet=options["aet"],
        port=options["port"],
        host=options["host"],
        spool=options["spool"],
        models=routing.models,
        forwards=[d.peer for d in routing.destinations.values()],
        allow=allow,
        series_timeout=options["series_timeout"],
        complete_on_release=options["complete_on_release"],
        max_associations=options["max_associations"],
        min_free_mb=options["min_free_mb"],
        tls=tls,
        acse_timeout=min(30.0, options["timeout"]),
        dimse_timeout=options["timeout"],
        network_timeout=options["timeout"],
        artim=options["artim"],
        pending_total=options["max_pending"],
        pending_per_host=options["max_pending_per_host"],
    )
    metrics = ServeMetrics(previews=http_address is not None, show_phi=options["http_show_phi"])
    listener = Listener(config, metrics=metrics)
    deid_key = None
    if any(destination.deid for destination in routing.destinations.values()):
        deid_key = load_or_create_key(listener.spool.root / DEID_KEY)[0]
    audit = AuditLog(listener.spool.root / AUDIT_NAME)
    listener.audit = audit
    worker = Worker(
        listener.queue,
        listener.spool.root / "results",
        routing,
        backend=options["backend"],
        precision=options["precision"],
        calling_aet=config.aet,
        audit=audit,
        deid_key=deid_key,
        metrics=metrics,
        priors_move_port=options["priors_move_port"],
    )
    listener.pipeline = worker
    http = None
    if http_address is not None:
        try:
            http = _start_http(http_address, options["http_token"], listener, routing, config.aet)
        except OSError as error:
            audit.close()
            raise click.ClickException(
                "cannot listen on --http {}:{}: {}".format(*http_address, error)
            ) from None
    try:
        host, port = listener.start()
    except OSError as error:
        if http is not None:
            http.stop()
        audit.close()
        raise click.ClickException(
            f"cannot listen on {config.host}:{config.port}: {error}"
        ) from None
    worker.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if sys.stderr.isatty():
        _live(stop, listener, worker, f"edgeimg serve {config.aet}@{host}:{port}")
    else:
        while not stop.wait(0.5):
            pass
    listener.stop()
    worker.stop()
    if http is not None:
        http.stop()
    audit.close()


def _http_settings(options: dict[str, Any]) -> tuple[str, int] | None:
    """The --http address, checked with its token before anything binds (usage errors)."""
    from edgeimg.serve.http import HttpSettingError, check_token, parse_address

    if options["http_address"] is None:
        if options["http_show_phi"]:
            raise click.UsageError("--http-show-phi needs --http")
        return None
    try:
        address = parse_address(options["http_address"])
        check_token(address[0], options["http_token"])
    except HttpSettingError as error:
        raise click.UsageError(str(error)) from None
    return address


def _start_http(
    address: tuple[str, int], token: str | None, listener: Any, routing: Any, aet: str
) -> Any:
    from edgeimg.serve.http import status_server

    destinations = {name: d.peer for name, d in routing.destinations.items()}
    server = status_server(address, token, listener, destinations, f"edgeimg serve {aet}")
    server.start()
    return server


def _live(stop: threading.Event, listener: Any, worker: Any, title: str) -> None:
    """The live status view until `stop`; log lines show in its tail instead of scrolling."""
    from rich.console import Console
    from rich.live import Live

    from edgeimg.serve.view import REFRESH_PER_SECOND, LogTail, StatusView, established

    terminal = sys.stderr
    tail = LogTail()
    view = StatusView(
        listener.queue,
        title=title,
        associations=established(listener),
        latency=worker.latency,
        tail=tail,
    )
    console = Console(file=terminal, highlight=False)
    sys.stderr = tail
    try:
        with Live(
            view.render(),
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            while not stop.wait(1 / REFRESH_PER_SECOND):
                live.update(view.render(), refresh=True)
    finally:
        sys.stderr = terminal


@click.command()
@click.argument("peer", callback=_peer)
@click.option(
    "--aet",
    "calling",
    default=DEFAULT_CALLING_AET,
    show_default=True,
    help="Our (calling) AE title.",
)
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
@click.argument("peer", callback=_peer)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--aet",
    "calling",
    default=DEFAULT_CALLING_AET,
    show_default=True,
    help="Our (calling) AE title.",
)
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
