"""Sending results to a destination of either kind: C-STORE to `AET@HOST:PORT`, or STOW-RS to a
DICOMweb base URL. Both answer one `SendResult` per file, so the forwarder's retry, backoff and
queue reporting are the same for each."""

from __future__ import annotations

from pathlib import Path

from edgeimg.dicomweb import Client, is_url, stow
from edgeimg.net import SendResult, parse_peer, send
from edgeimg.privacy import describe
from edgeimg.serve.routing import Destination


def deliver(destination: Destination, paths: list[str], calling: str) -> list[SendResult]:
    """Send `paths` to `destination`; whatever goes wrong is every file's failure (retried),
    never an exception that would leave the forwards claimed and unanswered."""
    try:
        if is_url(destination.peer):
            with Client.from_url(destination.peer, ca=destination.tls_ca) as client:
                return stow(client, paths)
        return send(parse_peer(destination.peer), paths, calling=calling)
    except Exception as error:
        return [SendResult(Path(path), None, describe(error)) for path in paths]
