"""`edgeimg serve`: its options and config file, and the listener, worker and live view it runs."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from edgeimg.commands.deid import load_or_create_key
from edgeimg.commands.network import peer_callback
from edgeimg.commands.options import CALIB_TO_LOAD, calib_option, triton_option
from edgeimg.commands.precision import precision_option
from edgeimg.commands.weights import use_weights_for, weights_option
from edgeimg.plugins import UnknownName, get_registry
from edgeimg.serve.preassociation import ARTIM, PENDING_PER_HOST, PENDING_TOTAL
from edgeimg.serve.spool import DEFAULT_SPOOL

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

AUDIT_NAME = "audit.jsonl"
DEID_KEY = "deid.key"


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
    callback=peer_callback,
    help="Send results to AET@HOST:PORT (C-STORE) or https://HOST/dicom-web (STOW-RS).",
)
@click.option(
    "--priors-from",
    callback=peer_callback,
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
@calib_option(CALIB_TO_LOAD)
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
        calib=options["calib"],
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
