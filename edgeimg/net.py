"""DICOM network client helpers: `AET@HOST:PORT` peers, C-ECHO and C-STORE over files."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE
from pynetdicom.association import Association

from edgeimg.files import dicom_files
from edgeimg.serve.pynetdicom_adapter import no_delay, stream_stored_files

DEFAULT_CALLING_AET = "EDGEIMG"
MAX_CONTEXTS = 128
#: PS3.8 9.3.4 A-ASSOCIATE-RJ (source, reason) in words
_REJECTIONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded (too many associations)",
}


class PeerError(ValueError):
    """A peer address that is not `AET@HOST:PORT`; the message names the part that is wrong."""


class NetworkError(Exception):
    """No association with a peer: it cannot be reached or it rejected us (one line of why)."""


@dataclass(frozen=True)
class Peer:
    """A remote application entity."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """Parse dcmtk-style `AET@HOST:PORT` (IPv6 hosts in brackets); `PeerError` names the part
    that is wrong (AE title, host or port)."""
    aet, at, address = text.strip().partition("@")
    host, colon, port_text = address.rpartition(":")
    if not at or not colon:
        raise PeerError(f"{text!r}: expected AET@HOST:PORT")
    aet = aet.strip()
    if not aet or len(aet) > 16 or "\\" in aet or not aet.isprintable():
        raise PeerError(f"{text!r}: AE title {aet!r} must be 1-16 printable characters, no '\\'")
    if host.startswith("["):
        host = host[1:-1] if host.endswith("]") else ""
    if not host or any(char.isspace() or char in "[]@/" for char in host):
        raise PeerError(f"{text!r}: host {host!r} is not a host name or address")
    if not port_text.isdigit():
        raise PeerError(f"{text!r}: port {port_text!r} is not a number")
    if not 0 < int(port_text) < 65536:
        raise PeerError(f"{text!r}: port {port_text} is out of range (1-65535)")
    return Peer(aet, host, int(port_text))


def client(calling: str, timeout: float) -> AE:
    """An AE calling as `calling`, every timeout set to `timeout`."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def echo(peer: Peer, calling: str = DEFAULT_CALLING_AET, timeout: float = 10) -> tuple[bool, str]:
    """C-ECHO `peer`; returns (ok, one-line result). `NetworkError` if there is no association."""
    ae = client(calling, timeout)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = associate(ae, peer, timeout)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return False, f"no C-ECHO response from {peer}"
    return code == 0, f"C-ECHO {peer}: status 0x{code:04X}"


def associate(ae: AE, peer: Peer, timeout: float, **options: Any) -> Association:
    """An established association with `peer` (Nagle off), or `NetworkError` saying why not;
    `options` go to pynetdicom's `AE.associate` (ext_neg, evt_handlers)."""
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, **options)
    if assoc.is_established:
        no_delay(assoc)
        return assoc
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        key = (getattr(answer, "result_source", None), getattr(answer, "diagnostic", None))
        raise NetworkError(f"association with {peer} rejected: {_REJECTIONS.get(key, key)}")
    reason = _unreachable(peer, timeout)
    if reason:
        raise NetworkError(f"cannot connect to {peer}: {reason}")
    raise NetworkError(f"association with {peer} aborted (is it a DICOM peer with TLS off?)")


def _unreachable(peer: Peer, timeout: float) -> str | None:
    """Why a TCP connection to `peer` fails, in words, or None when it can be made.

    pynetdicom only says that the association failed; this one extra connection, made only
    after a failure, tells a refused port from an unknown host or a silent network.
    """
    try:
        with socket.create_connection((peer.host, peer.port), timeout=timeout):
            return None
    except socket.gaierror:
        return "unknown host"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as error:
        if error.errno == errno.ECONNREFUSED:
            return "connection refused"
        return (error.strerror or str(error)).lower()


@dataclass
class SendResult:
    """What happened to one file."""

    path: Path
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status in (0x0000, 0xB000, 0xB007, 0xB006)


def _context(path: Path) -> tuple[str, str]:
    meta = read_file_meta_info(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def _batches(items: list[tuple[Path, tuple[str, str]]]) -> Iterator[list[tuple[Path, tuple]]]:
    """Split into runs needing at most MAX_CONTEXTS presentation contexts each."""
    batch: list[tuple[Path, tuple]] = []
    contexts: set[tuple[str, str]] = set()
    for path, context in items:
        if context not in contexts and len(contexts) == MAX_CONTEXTS:
            yield batch
            batch, contexts = [], set()
        contexts.add(context)
        batch.append((path, context))
    if batch:
        yield batch


def send(
    peer: Peer,
    paths: Iterable[os.PathLike[str] | str],
    calling: str = DEFAULT_CALLING_AET,
    timeout: float = 30,
    progress: Callable[[SendResult], None] = lambda result: None,
    fail_fast: bool = False,
) -> list[SendResult]:
    """C-STORE every DICOM file under `paths` to `peer`, sending file bytes as they are.

    A failed association fails each file of its batch with the one-line reason; with
    `fail_fast` it raises `NetworkError` instead (the CLI says it once, not once per file).
    """
    stream_stored_files()
    results: list[SendResult] = []
    readable: list[tuple[Path, tuple[str, str]]] = []
    for path in dicom_files(paths)[0]:
        try:
            readable.append((path, _context(path)))
        except Exception as error:
            result = SendResult(path, None, f"not a readable DICOM file: {error}")
            results.append(result)
            progress(result)
    for batch in _batches(readable):
        results.extend(_send_batch(peer, batch, calling, timeout, progress, fail_fast))
    return results


def _send_batch(
    peer: Peer,
    batch: list[tuple[Path, tuple[str, str]]],
    calling: str,
    timeout: float,
    progress: Callable[[SendResult], None],
    fail_fast: bool,
) -> list[SendResult]:
    ae = client(calling, timeout)
    for sop_class, syntax in sorted({context for _, context in batch}):
        ae.add_requested_context(sop_class, syntax)
    results = []
    try:
        assoc = associate(ae, peer, timeout)
    except NetworkError as error:
        if fail_fast:
            raise
        for path, _ in batch:
            results.append(SendResult(path, None, str(error)))
            progress(results[-1])
        return results
    try:
        for path, _ in batch:
            results.append(_store_one(assoc, path))
            progress(results[-1])
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def _store_one(assoc: Association, path: Path) -> SendResult:
    if not assoc.is_established:
        return SendResult(path, None, "association lost")
    try:
        status = assoc.send_c_store(path)
    except Exception as error:
        return SendResult(path, None, str(error))
    code = getattr(status, "Status", None)
    return SendResult(path, code, None if code is not None else "no response")
