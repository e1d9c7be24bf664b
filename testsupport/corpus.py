"""The bad-input corpus: malformed objects and association requests, each with its outcome.

Network cases are written as PDU bytes with `struct` (no DICOM library on the sending side, so
nothing sanitises what we send) and driven over a plain socket; file cases go through the same
read-and-validate path as `edgeimg run` (`read_header`, then `read_image`). Outcomes are short
strings, so a table row reads as what a peer sees:

    "status 0xA900"          C-STORE response status (one per C-STORE, comma separated)
    "reject 1/1/7"           A-ASSOCIATE-RJ result/source/reason, then the connection closed
    "abort 2/6"              A-ABORT source/reason
    "AC 0,3"                 A-ASSOCIATE-AC with the result of each presentation context
    "closed"                 the server closed the connection without a PDU
    "input error"            DicomInputError naming the file (read path)

`tests/test_bad_input.py` runs the table against an in-process listener; the fuzzers and
`benchmarks/reliability/` reuse the PDU builders and the raw client.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pynetdicom.dsutils import decode, encode

from edgeimg.dicom.read import DicomInputError, read_header, read_image
from edgeimg.serve.config import MAX_PDU
from testsupport.peers import ct_instance

AET = "EDGE"
CALLING = "SCANNER"
VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
JPEG_XL = "1.2.840.10008.1.2.4.112"
HTJ2K = "1.2.840.10008.1.2.4.201"
UNKNOWN_CLASS = "1.2.826.0.1.3680043.8.498.999.1"
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


# --- data sets ---------------------------------------------------------------------------------


def uid(name: str) -> str:
    """A valid UID that is the same for a name on every run."""
    return generate_uid(entropy_srcs=["edgeimg corpus", name])


def instance(name: str, size: int = 16, **attrs: object) -> Dataset:
    """A small valid CT image with UIDs derived from `name`, then `attrs` set on it."""
    ds = ct_instance(series_uid=uid(f"{name} series"), size=size)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(name)
    ds.StudyInstanceUID = uid(f"{name} study")
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def encoded(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The data set bytes as a C-STORE carries them, in `syntax`."""
    implicit = syntax == ImplicitVRLittleEndian
    with _lenient():
        raw = encode(ds, implicit, True)
    if syntax == DeflatedExplicitVRLittleEndian:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = packer.compress(raw) + packer.flush()
    return raw


def explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element, written by hand (any VR, any length field)."""
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
        return struct.pack("<HH2sHL", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def split_at(ds: Dataset, tag: int) -> tuple[bytes, bytes]:
    """The encoded elements of `ds` before and from `tag`, to splice hand-made bytes between."""
    head = Dataset()
    for elem in ds:
        if elem.tag < tag:
            head[elem.tag] = elem
    whole, front = encoded(ds), encoded(head)
    return front, whole[len(front) :]


def nested_sequences(depth: int) -> bytes:
    """ContentSequence items nested `depth` deep (undefined lengths, as scanners write them)."""
    opening = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


def part10(
    payload: bytes, sop_class: str, sop_uid: str, syntax: str = ExplicitVRLittleEndian
) -> bytes:
    """A file: preamble, DICM, file meta group, then the data set bytes as given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    buffer = BytesIO()
    with _lenient():
        write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue() + payload


def _rle(name: str) -> Dataset:
    ds = instance(name)
    ds.compress(RLELossless)
    return ds


def _rle_frames(name: str) -> Dataset:
    ds = _rle(name)
    ds.NumberOfFrames = 2
    return ds


def _cut_pixels(ds: Dataset) -> Dataset:
    ds.PixelData = ds.PixelData[:100]
    return ds


def _rle_cut_fragment(name: str) -> bytes:
    raw = encoded(_rle(name))
    # the sequence delimiter and 40 bytes of the last fragment go; the lengths still claim them
    return raw[: len(raw) - 48] + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _with_bad_vr(name: str) -> bytes:
    ds = instance(name)
    head, tail = split_at(ds, 0x00081030)
    return head + explicit_element(0x0008, 0x1030, b"Q!", b"HEAD CT ") + tail


def _bad_vr_on_rows(name: str) -> bytes:
    ds = instance(name)
    del ds.Rows
    head, tail = split_at(ds, 0x00280010)
    return head + explicit_element(0x0028, 0x0010, b"ZZ", struct.pack("<H", 16)) + tail


def _huge_text(name: str) -> bytes:
    ds = instance(name)
    head, tail = split_at(ds, 0x00324000)
    return head + struct.pack("<HH2sHL", 0x0032, 0x4000, b"UT", 0, 0x7FFFFFF0) + b"hi" + tail


def _huge_pixel_length(name: str) -> bytes:
    ds = instance(name)
    head, _ = split_at(ds, 0x7FE00010)
    return head + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 0xFFFFFFF0) + ds.PixelData


def _deep(name: str, depth: int) -> bytes:
    head, tail = split_at(instance(name), 0x0040A730)
    return head + nested_sequences(depth) + tail


def _hostile_uid(name: str, text: str) -> tuple[str, bytes]:
    ds = instance(name)
    ds.SOPInstanceUID = text
    return text, encoded(ds)


def _store(name: str, payload: bytes, sop_uid: str | None = None, **kw: str) -> tuple[Store]:
    return (Store(kw.pop("sop_class", CTImageStorage), sop_uid or uid(name), payload, **kw),)


def _attrs(name: str, **attrs: object) -> tuple[Store]:
    return _store(name, encoded(instance(name, **attrs)))


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A malformed input and what the listener (or the read path) must answer."""

    name: str
    expected: str
    stores: Callable[[str], Sequence[Store]] | None = None  # called with the case's name
    chunks: Callable[[], Sequence[bytes]] | None = None
    file: Callable[[str], bytes] | None = None  # called with the case's name
    stored: Sequence[str] = field(default_factory=tuple)  # SOP UIDs it leaves in the spool

    @property
    def kind(self) -> str:
        return "store" if self.stores else "pdu" if self.chunks else "file"


def _rq(**kw: object) -> Callable[[], list[bytes]]:
    return lambda: [associate_rq(**kw)]  # type: ignore[arg-type]


_CT_CONTEXT = ((CTImageStorage, (ExplicitVRLittleEndian,)),)
_HOSTILE_UIDS = {
    "uid-dot-dot-slash": "../../../../etc/passwd",
    "uid-shell": "1.2.3;rm -rf ~;$(reboot)`id`",
    "uid-absolute-path": "/var/lib/edgeimg/x.dcm",
}


def _hostile(name: str) -> tuple[Store]:
    text, payload = _hostile_uid(name, _HOSTILE_UIDS[name])
    return _store(name, payload, sop_uid=text)


NETWORK: list[Case] = [
    # association requests
    Case("called-ae-unknown", "reject 1/1/7, closed", chunks=_rq(called="NOT-US")),
    Case("calling-ae-not-allowed", "reject 1/1/3, closed", chunks=_rq(calling="INTRUDER")),
    Case("calling-ae-empty", "abort 0/0, closed", chunks=_rq(calling="")),
    Case("no-presentation-contexts", "reject 1/1/1, closed", chunks=_rq(contexts=())),
    Case("protocol-version-2", "reject 1/2/2, closed", chunks=_rq(version=2)),
    Case(
        "application-context-unknown",
        "reject 1/1/2, closed",
        chunks=_rq(application_context="1.2.3.4"),
    ),
    Case(
        "unknown-sop-class-only",
        "AC 3, release RP, closed",
        chunks=lambda: [associate_rq(((UNKNOWN_CLASS, (ExplicitVRLittleEndian,)),)), RELEASE_RQ],
    ),
    Case(
        "transfer-syntax-without-decoder",
        "AC 4,4, release RP, closed",
        chunks=lambda: [
            associate_rq(((CTImageStorage, (JPEG_XL,)), (CTImageStorage, (HTJ2K,)))),
            RELEASE_RQ,
        ],
    ),
    Case(
        "rq-truncated-items",
        "reject 1/1/2, closed",
        chunks=lambda: [pdu(0x01, associate_rq()[6:40])],
    ),
    # out-of-state and hostile PDUs
    Case(
        "p-data-before-associate", "abort 0/0, closed", chunks=lambda: p_data(1, c_echo_rq(), True)
    ),
    Case("release-before-associate", "abort 0/0, closed", chunks=lambda: [RELEASE_RQ]),
    Case("ac-sent-to-acceptor", "abort 0/0, closed", chunks=lambda: [pdu(0x02, b"\0" * 68)]),
    Case(
        "second-associate-rq",
        "AC 0, abort 2/0, closed",
        chunks=lambda: [associate_rq(), associate_rq()],
    ),
    Case(
        "p-data-before-the-ac",
        "abort 2/0, closed",  # found by fuzzing: killed a DUL thread
        chunks=lambda: [associate_rq() + b"".join(p_data(1, c_echo_rq(), True))],
    ),
    Case(
        "pdu-declares-4-gib",
        "abort 2/6, closed",
        chunks=lambda: [struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\0" * 64],
    ),
    Case(
        "associate-rq-declares-2-gib",
        "abort 2/6, closed",
        chunks=lambda: [struct.pack(">BBL", 0x01, 0, 1 << 31) + b"\0" * 64],
    ),
    Case(
        "p-data-over-negotiated-max",
        "AC 0, abort 2/6, closed",
        chunks=lambda: [associate_rq(_CT_CONTEXT), struct.pack(">BBL", 0x04, 0, MAX_PDU + 1)],
    ),
    Case("http-get", "abort 2/6, closed", chunks=lambda: [b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n"]),
    Case("unknown-pdu-type", "abort 0/0, closed", chunks=lambda: [pdu(0x0A, b"\0" * 8)]),
    Case(
        "stall-mid-pdu", "closed", chunks=lambda: [struct.pack(">BBL", 0x01, 0, 200) + b"\0" * 10]
    ),
    Case("connect-and-say-nothing", "closed", chunks=lambda: [b""]),
    # C-STORE data sets
    Case(
        "pixel-data-truncated",
        "status 0xA900",
        stores=lambda name: _store(name, encoded(_cut_pixels(instance(name)))),
    ),
    Case(
        "data-set-cut-mid-element",
        "status 0xC000",
        stores=lambda name: _store(name, encoded(instance(name))[:-50]),
    ),
    Case(
        "bits-allocated-12",
        "status 0xA900",
        stores=lambda name: _attrs(name, BitsAllocated=12, BitsStored=12, HighBit=11),
    ),
    Case(
        "bits-allocated-8-for-16-bit-data",
        "status 0xA900",
        stores=lambda name: _attrs(name, BitsAllocated=8, BitsStored=8, HighBit=7),
    ),
    Case(
        "bits-stored-over-allocated",
        "status 0xA900",
        stores=lambda name: _attrs(name, BitsStored=24),
    ),
    Case(
        "dimensions-65535-squared-x-frames",
        "status 0xA900",
        stores=lambda name: _attrs(name, Rows=65535, Columns=65535, NumberOfFrames=10000),
    ),
    Case("frames-zero", "status 0xA900", stores=lambda name: _attrs(name, NumberOfFrames=0)),
    Case(
        "samples-per-pixel-4",
        "status 0xA900",
        stores=lambda name: _attrs(name, SamplesPerPixel=4),
    ),
    Case(
        "huge-declared-text-length",
        "status 0xC000",
        stores=lambda name: _store(name, _huge_text(name)),
    ),
    Case(
        "huge-declared-pixel-length",
        "status 0xC000",
        stores=lambda name: _store(name, _huge_pixel_length(name)),
    ),
    Case(
        "invalid-vr-on-rows",
        "status 0xC000",
        stores=lambda name: _store(name, _bad_vr_on_rows(name)),
    ),
    Case(
        "invalid-vr-on-description",
        "status 0xC000",
        stores=lambda name: _store(name, _with_bad_vr(name)),
    ),
    Case(
        "sequences-nested-10000-deep",
        "status 0xC000",
        stores=lambda name: _store(name, _deep(name, 10000)),
    ),
    Case(
        "item-delimiter-at-top-level",
        "status 0xC000",
        stores=lambda name: _store(
            name,
            encoded(instance(name)) + struct.pack("<HHL", 0xFFFE, 0xE00D, 0),
        ),
    ),
    *(Case(name, "status 0xA900", stores=_hostile) for name in _HOSTILE_UIDS),
    Case(
        "series-uid-with-slashes",
        "status 0xA900",
        stores=lambda name: _attrs(name, SeriesInstanceUID="1.2/../../3"),
    ),
    Case(
        "study-uid-too-long",
        "status 0xA900",
        stores=lambda name: _attrs(name, StudyInstanceUID="1." + "2" * 70),
    ),
    Case(
        "sop-uid-missing",
        "status 0xA900",
        stores=lambda name: _store(name, encoded(_without(instance(name), "SOPInstanceUID"))),
    ),
    Case(
        "dataset-class-differs-from-command",
        "status 0xA900",
        stores=lambda name: _attrs(name, SOPClassUID=MRImageStorage),
    ),
    Case(
        "dataset-instance-differs-from-command",
        "status 0xA900",
        stores=lambda name: _store(
            name,
            encoded(instance(name)),
            sop_uid=uid("someone else"),
        ),
    ),
    Case(
        "command-class-differs-from-context",
        "status 0x0122",
        stores=lambda name: _store(
            name,
            encoded(instance(name, SOPClassUID=MRImageStorage)),
            sop_class=MRImageStorage,
        ),
    ),
    Case(
        "rle-fragment-truncated",
        "status 0xC000",
        stores=lambda name: _store(
            name,
            _rle_cut_fragment(name),
            syntax=RLELossless,
        ),
    ),
    Case(
        "rle-frames-exceed-fragments",
        "status 0xA900",
        stores=lambda name: _store(
            name,
            encoded(_rle_frames(name)),
            syntax=RLELossless,
        ),
    ),
    Case(
        "command-uid-too-long",
        "abort 2/0",
        stores=lambda name: _store(
            name,
            encoded(instance(name)),
            sop_uid="1." + "3" * 70,
        ),
    ),
    Case(
        "deflate-stream-corrupt",
        "status 0xC000",
        stores=lambda name: _store(
            name,
            b"\xff" * 8 + encoded(instance(name), DeflatedExplicitVRLittleEndian)[8:],
            syntax=DeflatedExplicitVRLittleEndian,
        ),
    ),
    Case(
        "not-a-data-set",
        "status 0xC000",
        stores=lambda name: _store(name, b"\x08\x00\x16\x00UI\xff\x7f1.2"),
    ),
    Case(
        "duplicate-instance",
        "status 0x0000, status 0x0000",
        stores=lambda name: _store(name, encoded(instance(name))) * 2,
        stored=(uid("duplicate-instance"),),
    ),
]


def _without(ds: Dataset, keyword: str) -> Dataset:
    delattr(ds, keyword)
    return ds


def _file(name: str, payload: bytes, syntax: str = ExplicitVRLittleEndian) -> bytes:
    return part10(payload, CTImageStorage, uid(name), syntax)


def _file_attrs(**attrs: object) -> Callable[[str], bytes]:
    return lambda name: _file(name, encoded(instance(name, **attrs)))


def _garbage_jpeg(name: str) -> bytes:
    ds = instance(name)
    frame = b"\xff\xd8\xff\xc0" + b"\x13" * 60
    ds.PixelData = encapsulate_one(frame)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    return _file(name, encoded(ds), syntax="1.2.840.10008.1.2.4.50")


def encapsulate_one(frame: bytes) -> bytes:
    from pydicom.encaps import encapsulate

    return encapsulate([frame])


def _undecodable_syntax(name: str) -> bytes:
    ds = instance(name)
    ds.PixelData = encapsulate_one(b"\xff\x0a" + b"\0" * 30)
    ds["PixelData"].VR = "OB"
    return _file(name, encoded(ds), syntax=JPEG_XL)


FILES: list[Case] = [
    Case("file-empty", "input error", file=lambda name: b""),
    Case(
        "file-http-response",
        "input error",
        file=lambda name: b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>" * 4,
    ),
    Case("file-preamble-only", "input error", file=lambda name: b"\0" * 128 + b"DICM"),
    Case(
        "file-pixel-data-truncated",
        "input error",
        file=lambda name: _file(name, encoded(instance(name))[:-100]),
    ),
    Case(
        "file-bits-allocated-12",
        "input error",
        file=_file_attrs(BitsAllocated=12),
    ),
    Case(
        "file-dimensions-65535",
        "input error",
        file=_file_attrs(Rows=65535, Columns=65535, NumberOfFrames=10000),
    ),
    Case(
        "file-huge-declared-pixel-length",
        "input error",
        file=lambda name: _file(name, _huge_pixel_length(name)),
    ),
    Case(
        "file-huge-declared-text-length",
        "input error",
        file=lambda name: _file(name, _huge_text(name)),
    ),
    Case(
        "file-invalid-vr-on-rows",
        "input error",
        file=lambda name: _file(name, _bad_vr_on_rows(name)),
    ),
    Case(
        "file-sequences-nested-10000-deep",
        "input error",
        file=lambda name: _file(name, _deep(name, 10000)),
    ),
    Case(
        "file-uid-dot-dot-slash",
        "input error",
        file=lambda name: _file(
            name,
            _hostile_uid(name, "../../etc/passwd")[1],
        ),
    ),
    Case("file-jpeg-garbage", "input error", file=_garbage_jpeg),
    Case(
        "file-syntax-without-decoder",
        "input error",
        file=_undecodable_syntax,
    ),
    Case(
        "file-meta-only",
        "input error",
        file=lambda name: part10(b"", CTImageStorage, uid(name)),
    ),
]

CORPUS: list[Case] = NETWORK + FILES


def run_network_case(case: Case, port: int) -> str:
    """What the listener on `port` answered to `case`, as an outcome string."""
    if case.chunks is not None:
        return exchange(port, case.chunks())
    items = list(case.stores(case.name))  # type: ignore[misc]
    contexts = list(dict.fromkeys((item.context, item.syntax) for item in items))
    answers = []
    with Association(port, contexts) as assoc:
        try:
            for item in items:
                answers.append(f"status 0x{assoc.store(item):04X}")
        except ConnectionError as error:  # the server aborted: the message describes its PDU
            answers.append(str(error))
    return ", ".join(answers)


def read_file(path: Path) -> str:
    """ "ok", or "input error" when the read path refuses it with a message naming the file.

    Anything else (another exception, a message without the file) is returned as a finding.
    """
    try:
        read_header(path)
        read_image(path)
    except DicomInputError as error:
        if not str(error).startswith(f"{path}: ") or "\n" in str(error):
            return f"unclear error: {error}"
        return "input error"
    return "ok"


def run_file_case(case: Case, directory: Path) -> str:
    path = directory / f"{case.name}.dcm"
    path.write_bytes(case.file(case.name))  # type: ignore[misc]
    return read_file(path)
