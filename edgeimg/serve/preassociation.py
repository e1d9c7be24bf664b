"""Connections before their association: the ARTIM timer and the bounds on pending peers.

A TCP connection is not an association. Until it has sent a whole A-ASSOCIATE-RQ PDU it is
*pending*: it holds no association slot (pynetdicom only sees it once the request is in), it
must send that request within the ARTIM time (PS3.8 9.1.5), and pending connections are bounded
per host and in total. A new connection over a bound is not refused: the oldest pending
connection of the busiest host is closed instead. A flood then churns through its own
connections, while a real peer, which sends its request within milliseconds of connecting, is
never the oldest for long.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from edgeimg.serve.eventlog import log

#: seconds a new connection has to send its whole A-ASSOCIATE-RQ
ARTIM = 5.0
PENDING_PER_HOST = 32
PENDING_TOTAL = 128
A_ASSOCIATE_RQ = 0x01
#: the largest PDU other than P-DATA we read (an A-ASSOCIATE-RQ with 128 contexts is ~10 KiB)
NON_PDATA_LIMIT = 1 << 20
_READ_SIZE = 1 << 20
#: A-ABORT, source service user (0), no reason: PS3.8's answer to a PDU out of order (AA-1)
ABORT_UNEXPECTED = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0])
#: A-ABORT, source service provider (2), reason invalid PDU parameter value (6)
ABORT_INVALID_LENGTH = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])
_DRAIN_LIMIT = 1 << 16
_DRAIN_TIME = 1.0
#: seconds between two `connection_dropped` lines for the same host and reason
DROP_LOG_EVERY = 10.0
_DROP_KEYS = 1024


class Refused(Exception):
    """The connection did not send a usable A-ASSOCIATE-RQ; `abort` is what it is told."""

    def __init__(self, reason: str, abort: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.abort = abort


def read_exactly(peer: socket.socket, nr_bytes: int) -> bytearray:
    """`nr_bytes` from `peer`, fewer only if it closed. The buffer grows with what arrives,
    never ahead of it, so a claimed length is never allocated."""
    buffer = bytearray()
    while len(buffer) < nr_bytes:
        chunk = peer.recv(min(nr_bytes - len(buffer), _READ_SIZE))
        if not chunk:
            break
        buffer += chunk
    return buffer


def read_request(peer: socket.socket) -> bytes:
    """The first PDU of a connection when it is an A-ASSOCIATE-RQ; `Refused` otherwise.

    Socket timeouts (`TimeoutError`) pass through: the caller set them.
    """
    header = read_exactly(peer, 6)
    if len(header) < 6:
        raise Refused("closed before an association request")
    pdu_type, _, length = struct.unpack(">BBL", header)
    if length > NON_PDATA_LIMIT:
        raise Refused("first PDU too long", ABORT_INVALID_LENGTH)
    body = read_exactly(peer, length)
    if len(body) < length:
        raise Refused("closed inside the association request")
    if pdu_type != A_ASSOCIATE_RQ:
        raise Refused("first PDU is not an association request", ABORT_UNEXPECTED)
    return bytes(header + body)


def refuse(peer: socket.socket, refused: Refused) -> None:
    """Send the A-ABORT (if any), then let the peer read it before the close: what it still
    sends is drained (briefly) so that the close is not a reset that discards our answer."""
    try:
        if refused.abort:
            peer.settimeout(_DRAIN_TIME)
            peer.sendall(refused.abort)
            peer.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + _DRAIN_TIME, 0
            while drained < _DRAIN_LIMIT and time.monotonic() < deadline:
                chunk = peer.recv(4096)
                if not chunk:
                    break
                drained += len(chunk)
    except OSError:
        pass


class DropLog:
    """`connection_dropped` lines that a flood cannot turn into a flood of lines: at most one
    per host and reason every `every` seconds, whose `count` says how many drops it stands for
    (those held back since the last line included). `flush` writes what is still held back."""

    def __init__(self, every: float = DROP_LOG_EVERY) -> None:
        self.every = every
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def dropped(self, host: str, reason: str) -> None:
        now, key = time.monotonic(), (host, reason)
        with self._lock:
            last, held = self._last.get(key, (-self.every, 0))
            if now - last < self.every:
                self._last[key] = (last, held + 1)
                return
            if len(self._last) >= _DROP_KEYS:
                self._write_held(now, everything=True)
                self._last = {}
            self._last[key] = (now, 0)
        log("connection_dropped", host=host, reason=reason, count=held + 1)

    def flush(self, everything: bool = False) -> None:
        """Write the counts held back for `every` seconds (all of them with `everything`)."""
        with self._lock:
            self._write_held(time.monotonic(), everything)

    def _write_held(self, now: float, everything: bool) -> None:
        for (host, reason), (last, count) in list(self._last.items()):
            if count and (everything or now - last >= self.every):
                self._last[(host, reason)] = (now, 0)
                log("connection_dropped", host=host, reason=reason, count=count)


@dataclass(eq=False)
class Entry:
    """One pending connection, by its descriptor: the same before and after a TLS wrap."""

    fd: int
    host: str
    deadline: float
    closed_because: str | None = None


class Pending:
    """The pending connections, bounded per host and in total, each closed at its deadline.

    A reaper thread closes connections whose ARTIM time is over, whatever they are doing (a
    TLS handshake trickled byte by byte included); `admit` closes the oldest of the busiest
    host when a bound is reached. Whoever closes a registered connection's socket must `leave`
    first, so that a descriptor number is never shut down after it was reused.
    """

    def __init__(
        self, artim: float = ARTIM, per_host: int = PENDING_PER_HOST, total: int = PENDING_TOTAL
    ) -> None:
        self.artim, self.per_host, self.total = artim, per_host, total
        self._entries: OrderedDict[Entry, None] = OrderedDict()
        self._by_host: dict[str, list[Entry]] = {}
        self._changed = threading.Condition()
        self._stopped = False
        self.closed: dict[str, int] = {"artim": 0, "bound": 0}
        self.drops = DropLog()
        threading.Thread(target=self._reap, name="edgeimg-artim", daemon=True).start()

    def admit(self, sock: socket.socket, host: str) -> Entry:
        """Register a new connection, closing older pending ones past a bound."""
        entry = Entry(sock.fileno(), host, time.monotonic() + self.artim)
        with self._changed:
            if len(self._by_host.get(host, ())) >= self.per_host:
                self._close(self._by_host[host][0], "bound")
            elif len(self._entries) >= self.total:
                busiest = max(self._by_host.values(), key=len)
                self._close(busiest[0], "bound")
            self._by_host.setdefault(host, []).append(entry)
            self._entries[entry] = None
            self._changed.notify()
        return entry

    def leave(self, entry: Entry) -> bool:
        """The connection is no longer pending; False if it was closed meanwhile."""
        with self._changed:
            if entry.closed_because is None:
                self._remove(entry)
                return True
            return False

    def count(self, host: str | None = None) -> int:
        with self._changed:
            return len(self._entries) if host is None else len(self._by_host.get(host, ()))

    def stop(self) -> None:
        """Close every pending connection and end the reaper (the listener is stopping)."""
        with self._changed:
            for entry in list(self._entries):
                self._close(entry, "stopped")
            self._stopped = True
            self._changed.notify()
        self.drops.flush(everything=True)

    def _remove(self, entry: Entry) -> None:
        del self._entries[entry]
        hosts = self._by_host[entry.host]
        hosts.remove(entry)
        if not hosts:
            del self._by_host[entry.host]

    def _close(self, entry: Entry, why: str) -> None:
        entry.closed_because = why
        self.closed[why] = self.closed.get(why, 0) + 1
        self._remove(entry)
        # Shut down (not close) the descriptor: the thread reading it sees the end of the stream
        # and closes it. It is still open, as its thread leaves `Pending` before closing it.
        try:
            peer = socket.socket(fileno=entry.fd)
        except OSError:
            return  # not a socket any more: nothing to wake
        try:
            peer.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer is gone already
        finally:
            peer.detach()

    def _reap(self) -> None:
        """Close connections at their deadline; write held-back drop counts now and then."""
        with self._changed:
            while not self._stopped:
                oldest = next(iter(self._entries), None)
                if oldest is not None and oldest.deadline <= time.monotonic():
                    self._close(oldest, "artim")
                    continue
                until = oldest.deadline - time.monotonic() if oldest else self.drops.every
                self._changed.wait(min(until, self.drops.every))
                self.drops.flush()
