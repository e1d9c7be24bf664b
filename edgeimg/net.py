"""DICOM network client helpers: `AET@HOST:PORT` peers, C-ECHO and C-STORE over files."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.association import Association

from edgeimg.files import dicom_files

DEFAULT_CALLING_AET = "EDGEIMG"
MAX_CONTEXTS = 128
_PEER = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")


class PeerError(ValueError):
    """A peer address that is not `AET@HOST:PORT`."""


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
    """Parse dcmtk-style `AET@HOST:PORT` (IPv6 hosts in brackets)."""
    match = _PEER.match(text.strip())
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536 or not match["aet"].strip():
        raise PeerError(f"{text!r} is not AET@HOST:PORT (AE title of 1-16 characters)")
    return Peer(match["aet"].strip(), match["host"].strip("[]"), port)


def no_delay(assoc: Association) -> None:
    """Disable Nagle on an association's socket: DIMSE messages are small and latency-bound."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _client(calling: str, timeout: float) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def echo(peer: Peer, calling: str = DEFAULT_CALLING_AET, timeout: float = 10) -> tuple[bool, str]:
    """C-ECHO `peer`; returns (ok, one-line result)."""
    ae = _client(calling, timeout)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet)
    if not assoc.is_established:
        return False, f"association with {peer} failed ({_why(assoc)})"
    no_delay(assoc)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return False, f"no C-ECHO response from {peer}"
    return code == 0, f"C-ECHO {peer}: status 0x{code:04X}"


def _why(assoc: Association) -> str:
    if assoc.is_rejected:
        return "rejected"
    if assoc.is_aborted:
        return "aborted"
    return "no connection"


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
) -> list[SendResult]:
    """C-STORE every DICOM file under `paths` to `peer`, sending file bytes as they are.

    pynetdicom's documented STORE_SEND_CHUNKED_DATASET switch makes it stream the dataset from
    the file instead of decoding and re-encoding it (which would change what the peer stores).
    """
    _config.STORE_SEND_CHUNKED_DATASET = True
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
        results.extend(_send_batch(peer, batch, calling, timeout, progress))
    return results


def _send_batch(
    peer: Peer,
    batch: list[tuple[Path, tuple[str, str]]],
    calling: str,
    timeout: float,
    progress: Callable[[SendResult], None],
) -> list[SendResult]:
    ae = _client(calling, timeout)
    for sop_class, syntax in sorted({context for _, context in batch}):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet)
    results = []
    if not assoc.is_established:
        for path, _ in batch:
            results.append(SendResult(path, None, f"association failed ({_why(assoc)})"))
            progress(results[-1])
        return results
    no_delay(assoc)
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
