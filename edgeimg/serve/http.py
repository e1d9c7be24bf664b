"""`edgeimg serve --http`: /metrics, /healthz, /readyz and the status page on a daemon thread.

Loopback by default. Bound anywhere else, every request but the two probes needs the token
(`--http-token` or EDGEIMG_HTTP_TOKEN), as `Authorization: Bearer TOKEN` (Prometheus,
curl) or as the password of HTTP Basic (a browser asks for it); the comparison takes constant
time. The probes say only whether the process lives and can take images, so an orchestrator
needs no secret for them. Nothing here writes; the page shows no patient identity unless the
operator asked for it (`--http-show-phi`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import socket
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeimg.serve.eventlog import log
from edgeimg.serve.metrics import ServeMetrics, Sources
from edgeimg.serve.queue import Queue
from edgeimg.serve.security import is_loopback
from edgeimg.serve.spool import INCOMING, TEMP_PREFIX, Spool

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENV = "EDGEIMG_HTTP_TOKEN"
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
}
_PROBES = ("/healthz", "/readyz")


class HttpSettingError(ValueError):
    """An --http address or token that cannot be used; the message says which and why."""


def parse_address(text: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT`; a bare port listens on loopback."""
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]") if colon else DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise HttpSettingError(f"--http {text!r}: expected PORT or HOST:PORT (port 0-65535)")
    if not host or any(char.isspace() or char in "[]@/" for char in host):
        raise HttpSettingError(f"--http {text!r}: {host!r} is not a host name or address")
    return host, int(port)


def loopback_only(host: str) -> bool:
    """True when every address `host` names is on this machine (so no token is needed)."""
    if is_loopback(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(is_loopback(info[4][0]) for info in infos)


def check_token(host: str, token: str | None) -> str | None:
    """The token to require: None on loopback without one; an error off loopback without one."""
    if token is not None and len(token) < 16:
        raise HttpSettingError(f"the --http token must be at least 16 characters ({TOKEN_ENV})")
    if token is None and not loopback_only(host):
        raise HttpSettingError(
            f"--http {host}: listening beyond this machine needs a token "
            f"(--http-token or {TOKEN_ENV})"
        )
    return token


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries `token` (Bearer, or the Basic password)."""
    if token is None:
        return True
    scheme, _, value = (header or "").strip().partition(" ")
    offered = value.strip()
    if scheme.lower() == "basic":
        try:
            offered = base64.b64decode(offered, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered.encode(), token.encode())


@dataclass
class Status:
    """What the server reads from: the serve process's parts, by reference."""

    metrics: ServeMetrics
    listener: Any  # an edgeimg.serve.listener.Listener
    destinations: dict[str, str]  # name -> peer, as routed
    token: str | None = None
    title: str = "edgeimg serve"

    def __post_init__(self) -> None:
        # The server's own queue handle: each request thread closes its connection when done.
        self.queue = Queue(self.listener.spool.queue_path)

    def readiness(self) -> dict[str, bool]:
        """Each check a readiness probe makes; ready when all hold."""
        return {
            "listener": bool(self.listener.accepting()),
            "spool_writable": _writable(self.listener.spool),
            "spool_space": self.listener.spool.free_bytes() >= self.listener.spool.min_free,
            "queue": _answers(self.queue),
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    status: Status


class StatusServer:
    """The HTTP side of one serve process; `start` binds, `stop` closes."""

    def __init__(self, address: tuple[str, int], status: Status) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        server_class = type("_Bound", (_Server,), {"address_family": family})
        self._server = server_class(address, _Handler, bind_and_activate=False)
        self._server.status = status
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind (OSError if the address is taken) and serve; returns the bound host and port."""
        try:
            self._server.server_bind()
            self._server.server_activate()
        except OSError:
            self._server.server_close()
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="edgeimg-http", daemon=True
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        log("http_listening", host=host, port=port, token=self._server.status.token is not None)
        return host, port

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self._server.status.queue.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a silent client keeps its thread

    def version_string(self) -> str:
        return "edgeimg"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self._handle(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head=True)

    def _handle(self, head: bool) -> None:
        status = self.server.status
        path = urlsplit(self.path).path
        try:
            if path not in _PROBES and not authorized(
                self.headers.get("Authorization"), status.token
            ):
                challenge = {"WWW-Authenticate": 'Basic realm="edgeimg", charset="UTF-8"'}
                self._send(401, b"token required\n", "text/plain; charset=utf-8", head, challenge)
                return
            self._send(*_route(status, path), head=head)
        except Exception as error:  # a broken page must not take the process with it
            log("http_error", path=path, error=type(error).__name__)
            self._send(500, b"internal error\n", "text/plain; charset=utf-8", head)
        finally:
            status.queue.close()

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str,
        head: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (a scrape every 15 s would drown the log); errors are."""


def _route(status: Status, path: str) -> tuple[int, bytes, str]:
    from edgeimg.serve.page import render_page, snapshot

    text = "text/plain; charset=utf-8"
    if path == "/healthz":
        return 200, b"ok\n", text
    if path == "/readyz":
        checks = status.readiness()
        body = json.dumps({"ready": all(checks.values()), **checks}).encode() + b"\n"
        return (200 if all(checks.values()) else 503), body, "application/json"
    if path == "/metrics":
        return 200, generate_latest(status.metrics.registry), CONTENT_TYPE_LATEST
    if path == "/":
        return 200, render_page(snapshot(status)).encode(), "text/html; charset=utf-8"
    if path.startswith("/preview/") and path.endswith(".png"):
        job = path[len("/preview/") : -len(".png")]
        png = status.metrics.preview(int(job)) if job.isdigit() else None
        if png is not None:
            return 200, png, "image/png"
    return 404, b"not found\n", text


def sources(listener: Any, queue: Queue) -> Sources:
    """The scrape-time numbers of a listener, read through the server's own queue handle."""
    from edgeimg.serve.view import established

    return Sources(
        totals=queue.totals,
        free_bytes=listener.spool.free_bytes,
        min_free_bytes=listener.spool.min_free,
        associations=established(listener),
    )


def _writable(spool: Spool) -> bool:
    """Can a file be made, written and synced where instances land? (then it goes again)"""
    try:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=spool.root / INCOMING)
    except OSError:
        return False
    try:
        os.write(fd, b"\0")
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(name)


def _answers(queue: Queue) -> bool:
    try:
        queue.ping()
    except sqlite3.Error:
        return False
    return True


def status_server(
    address: tuple[str, int],
    token: str | None,
    listener: Any,
    destinations: dict[str, str],
    title: str = "edgeimg serve",
) -> StatusServer:
    """The server for a listener (not started): its metrics gain the scrape-time gauges."""
    status = Status(listener.metrics, listener, destinations, token, title)
    listener.metrics.watch(sources(listener, status.queue))
    return StatusServer(address, status)
