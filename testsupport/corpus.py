"""The bad-input corpus: malformed objects and association requests, each with its outcome.

Network cases are written as PDU bytes and driven over a plain socket by testsupport/rawdicom.py
(no DICOM library on the sending side, so nothing sanitises what we send); file cases go through
the same read-and-validate path as `edgeimg run` (`read_header`, then `read_image`). Outcomes
are short strings, so a table row reads as what a peer sees:

    "status 0xA900"          C-STORE response status (one per C-STORE, comma separated)
    "reject 1/1/7"           A-ASSOCIATE-RJ result/source/reason, then the connection closed
    "abort 2/6"              A-ABORT source/reason
    "AC 0,3"                 A-ASSOCIATE-AC with the result of each presentation context
    "closed"                 the server closed the connection without a PDU
    "input error"            DicomInputError naming the file (read path)

`tests/test_bad_input.py` runs the table against an in-process listener; the fuzzers and
`benchmarks/reliability/` reuse the data-set builders.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

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
from pynetdicom.dsutils import encode

from edgeimg.dicom.read import DicomInputError, read_header, read_image
from edgeimg.serve.config import MAX_PDU
from testsupport.peers import ct_instance
from testsupport.rawdicom import (
    RELEASE_RQ,
    Association,
    Store,
    _lenient,
    associate_rq,
    c_echo_rq,
    exchange,
    p_data,
    pdu,
)

JPEG_XL = "1.2.840.10008.1.2.4.112"
HTJ2K = "1.2.840.10008.1.2.4.201"
UNKNOWN_CLASS = "1.2.826.0.1.3680043.8.498.999.1"


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
