"""PDU bytes and a raw association client: DICOM on the wire without a DICOM library.

PDUs are written with `struct` (nothing on the sending side sanitises what we send) and driven
over a plain socket (or TLS), so a test can send what no real SCU would: a PDU out of state, a
length that lies, an A-ASSOCIATE-RQ a byte at a time. `exchange` and `describe` answer in the
outcome strings of the bad-input corpus (testsupport/corpus.py), which builds its network cases
on them; the fuzzers, tests/test_preassociation.py and `benchmarks/reliability/` use them too.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

AET = "EDGE"
CALLING = "SCANNER"
VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
FRAGMENT = 16384
READ_TIMEOUT = 15.0


# --- PDU bytes ---------------------------------------------------------------------------------


def pdu(pdu_type: int, body: bytes) -> bytes:
    """A PDU: type, reserved byte, 4-byte big-endian length, body."""
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def associate_rq(
    contexts: Sequence[tuple[str, Sequence[str]]] = ((VERIFICATION, (ExplicitVRLittleEndian,)),),
    called: str = AET,
    calling: str = CALLING,
    version: int = 1,
    application_context: str = APPLICATION_CONTEXT,
    max_pdu: int = FRAGMENT + 6,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing `contexts`: (abstract syntax, transfer syntaxes), ids 1, 3..."""
    items = [_item(0x10, application_context.encode())]
    for index, (abstract, syntaxes) in enumerate(contexts):
        subitems = _item(0x30, abstract.encode()) + b"".join(
            _item(0x40, syntax.encode()) for syntax in syntaxes
        )
        items.append(_item(0x20, bytes([2 * index + 1, 0, 0, 0]) + subitems))
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.8.498.1")
    items.append(_item(0x50, user))
    fixed = struct.pack(">HH", version, 0) + _ae(called) + _ae(calling) + b"\0" * 32
    return pdu(0x01, fixed + b"".join(items))


def p_data(context_id: int, message: bytes, command: bool, fragment: int = FRAGMENT) -> list[bytes]:
    """P-DATA-TF PDUs carrying one command or data set, one PDV per PDU."""
    chunks = [message[i : i + fragment] for i in range(0, len(message), fragment)] or [b""]
    pdus = []
    for index, chunk in enumerate(chunks):
        control = int(command) | (2 if index == len(chunks) - 1 else 0)
        pdus.append(pdu(0x04, struct.pack(">LBB", len(chunk) + 2, context_id, control) + chunk))
    return pdus


RELEASE_RQ = pdu(0x05, b"\0" * 4)
ABORT = pdu(0x07, b"\0\0\0\0")


def c_store_rq(sop_class: str, sop_uid: str, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set (implicit VR little endian, group length first)."""
    command = Dataset()
    command.AffectedSOPClassUID = sop_class
    command.CommandField = 0x0001
    command.MessageID = message_id
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = sop_uid
    with _lenient():
        body = encode(command, True, True)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    command = Dataset()
    command.AffectedSOPClassUID = VERIFICATION
    command.CommandField = 0x0030
    command.MessageID = message_id
    command.CommandDataSetType = 0x0101
    body = encode(command, True, True)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


class _lenient:
    """pydicom warns (or raises, by setting) on invalid values: hostile ones are the point."""

    def __enter__(self) -> None:
        self.mode = pydicom_config.settings.writing_validation_mode
        pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE

    def __exit__(self, *exc: object) -> None:
        pydicom_config.settings.writing_validation_mode = self.mode


# --- a raw association client ------------------------------------------------------------------


class Closed(Exception):
    """The server closed the connection."""


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise Closed
        data += chunk
    return bytes(data)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = struct.unpack(">BBL", recv_exact(sock, 6))
    return pdu_type, recv_exact(sock, length)


def context_results(body: bytes) -> dict[int, int]:
    """{context id: result} from an A-ASSOCIATE-AC body."""
    results, pos = {}, 68
    while pos + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, pos)
        if item_type == 0x21:
            results[body[pos + 4]] = body[pos + 6]
        pos += 4 + length
    return results


def describe(pdu_type: int, body: bytes) -> str:
    """One word for a PDU the server sent."""
    if pdu_type == 0x02:
        return "AC " + ",".join(str(r) for _, r in sorted(context_results(body).items()))
    if pdu_type == 0x03:
        return f"reject {body[1]}/{body[2]}/{body[3]}"
    if pdu_type == 0x07:
        return f"abort {body[2]}/{body[3]}"
    return {0x04: "P-DATA", 0x06: "release RP"}.get(pdu_type, f"PDU 0x{pdu_type:02X}")


def exchange(port: int, chunks: Sequence[bytes], timeout: float = READ_TIMEOUT) -> str:
    """Send each chunk and read the server's answer to it; then wait for it to close.

    An empty chunk means "send nothing, just wait". Returns the answers joined by ", ",
    ending in "closed" when the server hung up (or "open" if it still had not after `timeout`).
    """
    answers: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for chunk in chunks:
                if chunk:
                    sock.sendall(chunk)
                answers.append(describe(*read_pdu(sock)))
                if answers[-1].startswith(("reject", "abort")):
                    break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                read_pdu(sock)  # anything more (an A-ABORT after a stall) is not the answer
            answers.append("open")
        except Closed:
            answers.append("closed")
        except TimeoutError:
            answers.append("open")
        except ConnectionResetError:
            answers.append("closed")
    return ", ".join(answers)


@dataclass(frozen=True)
class Store:
    """One C-STORE: the command's UIDs and the data set bytes as sent, on a context."""

    sop_class: str
    sop_uid: str
    payload: bytes
    context: str = CTImageStorage
    syntax: str = ExplicitVRLittleEndian


class Association:
    """A minimal SCU over a socket (TLS with `tls`): associate, C-STORE raw bytes, C-ECHO."""

    def __init__(
        self,
        port: int,
        contexts: Sequence[tuple[str, str]],
        calling: str = CALLING,
        timeout: float = READ_TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock if tls is None else tls.wrap_socket(sock, server_hostname="localhost")
        proposed = [(abstract, (syntax,)) for abstract, syntax in contexts]
        self.sock.sendall(associate_rq(proposed, calling=calling))
        pdu_type, body = read_pdu(self.sock)
        if pdu_type != 0x02:
            self.sock.close()
            raise ConnectionError(f"association not accepted: {describe(pdu_type, body)}")
        results = context_results(body)
        self.ids = {cx: 2 * i + 1 for i, cx in enumerate(contexts) if results.get(2 * i + 1) == 0}
        self.message_id = 0

    def __enter__(self) -> Association:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, context_id: int, command: bytes, data: bytes | None) -> int:
        self.sock.sendall(b"".join(p_data(context_id, command, True)))
        if data is not None:
            self.sock.sendall(b"".join(p_data(context_id, data, False)))
        response = bytearray()
        while True:
            pdu_type, body = read_pdu(self.sock)
            if pdu_type != 0x04:
                raise ConnectionError(describe(pdu_type, body))
            pos = 0
            while pos < len(body):
                length, _, control = struct.unpack_from(">LBB", body, pos)
                response += body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 3 == 3:
                    return int(decode(BytesIO(bytes(response)), True, True).Status)

    def store(self, item: Store) -> int:
        """The C-STORE response status for `item`."""
        self.message_id += 1
        context_id = self.ids[(item.context, item.syntax)]
        return self._send(
            context_id, c_store_rq(item.sop_class, item.sop_uid, self.message_id), item.payload
        )

    def echo(self) -> int:
        self.message_id += 1
        return self._send(
            self.ids[(VERIFICATION, ExplicitVRLittleEndian)], c_echo_rq(self.message_id), None
        )

    def close(self) -> None:
        try:
            self.sock.sendall(RELEASE_RQ)
            read_pdu(self.sock)
        except (OSError, Closed):
            pass
        finally:
            self.sock.close()
