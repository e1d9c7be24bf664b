"""Property-based fuzzing of the read-and-validate path and of the listener's association handling.

Valid seeds (small files; PDU streams of a real association) are mutated byte-wise: flips,
inserts, deletes, truncation, and extreme values written over length fields. The properties:

* reading a mutated file either succeeds or raises DicomInputError naming the file: never any
  other exception, never a hang;
* a live listener fed a mutated PDU stream answers or closes (never hangs, no thread dies), and
  a legitimate association works right after.

In `make test` each runs a short derandomized pass (same examples every run). `make fuzz` sets
EDGEIMG_FUZZ_SECONDS (default 300, split between the two) and prints executions and findings;
whatever it finds becomes a case in testsupport/corpus.py.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from testsupport.corpus import encoded, instance, part10, read_file, uid
from testsupport.rawdicom import (
    AET,
    RELEASE_RQ,
    VERIFICATION,
    Association,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    p_data,
    pdu,
)

FUZZ_SECONDS = float(os.environ.get("EDGEIMG_FUZZ_SECONDS", "0"))
HANG_SECONDS = 20
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Hang(Exception):
    """An example ran past HANG_SECONDS."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds` (SIGALRM), so a hang is a finding."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def length_fields(data: bytes, start: int) -> list[tuple[int, int]]:
    """(offset, width) of the top-level explicit VR little endian length fields from `start`."""
    fields, pos = [], start
    while pos + 8 <= len(data):
        vr = data[pos + 4 : pos + 6]
        if not vr.isalpha():
            break
        if vr in _LONG_VRS:
            fields.append((pos + 8, 4))
            length = struct.unpack_from("<L", data, pos + 8)[0]
            pos += 12 + (0 if length == 0xFFFFFFFF else length)
            if length == 0xFFFFFFFF:
                break
        else:
            fields.append((pos + 6, 2))
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return fields


EXTREMES = (0, 1, 2, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF)


@st.composite
def mutated(draw: Callable, seeds: list[tuple[bytes, list[tuple[int, int]]]]) -> bytes:
    """One seed with one to four mutations; length fields are hit on purpose."""
    seed, fields = draw(st.sampled_from(seeds))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "length"]))
        if operation == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif operation == "truncate":
            del data[pos:]
        elif fields:
            offset, width = draw(st.sampled_from(fields))
            value = draw(st.sampled_from(EXTREMES) | st.integers(0, 2**32 - 1))
            data[offset : offset + width] = (value & (256**width - 1)).to_bytes(width, "little")
    return bytes(data)


def _file_seeds() -> list[tuple[bytes, list[tuple[int, int]]]]:
    seeds = []
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds = instance(f"fuzz seed {syntax}")
        seeds.append(part10(encoded(ds, syntax), CTImageStorage, ds.SOPInstanceUID, syntax))
    rle = instance("fuzz seed rle")
    rle.compress("1.2.840.10008.1.2.5")
    seeds.append(
        part10(encoded(rle), CTImageStorage, rle.SOPInstanceUID, rle.file_meta.TransferSyntaxUID)
    )
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm"):
        seeds.append(Path(get_testdata_file(name)).read_bytes())
    return [(seed, length_fields(seed, 132)) for seed in seeds]


def _stream_seeds() -> list[tuple[bytes, list[tuple[int, int]]]]:
    """PDU streams of whole associations; the length fields are the PDU lengths."""
    ds = instance("fuzz stream seed")
    contexts = (
        (VERIFICATION, (ExplicitVRLittleEndian,)),
        (CTImageStorage, (ExplicitVRLittleEndian,)),
    )
    streams = [
        [associate_rq(contexts), *p_data(1, c_echo_rq(), True), RELEASE_RQ],
        [
            associate_rq(contexts),
            *p_data(3, c_store_rq(CTImageStorage, uid("fuzz stream seed")), True),
            *p_data(3, encoded(ds), False, 200),
            RELEASE_RQ,
        ],
        [associate_rq(contexts), associate_rq(contexts), pdu(0x07, b"\0" * 4)],
    ]
    seeds = []
    for pdus in streams:
        offsets, pos = [], 0
        for item in pdus:
            offsets.append((pos + 2, 4))
            pos += len(item)
        seeds.append((b"".join(pdus), offsets))
    return seeds


class Budget:
    """How long and how many: a short fixed pass in `make test`, a timed run in `make fuzz`."""

    def __init__(self, examples: int, share: float) -> None:
        self.examples = examples
        self.seconds = FUZZ_SECONDS * share
        self.executions = 0

    def run(self, name: str, test: Callable) -> None:
        """Run the @given `test`: once derandomized, or in random rounds until time is up."""
        if not self.seconds:
            settings(
                max_examples=self.examples,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )(test)()
            return
        deadline = time.monotonic() + self.seconds
        findings = 0
        rounds = settings(
            max_examples=200,
            derandomize=False,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )(test)
        try:
            while time.monotonic() < deadline:
                rounds()  # each call draws new random examples
        except Exception:
            findings = 1
            raise
        finally:
            print(
                f"\nfuzz {name}: {self.executions} executions in {self.seconds:.0f} s, "
                f"{findings} findings"
            )


def test_read_path_never_fails_unclearly(tmp_path):
    budget = Budget(examples=150, share=0.5)
    path = tmp_path / "fuzzed.dcm"

    @given(mutated(_file_seeds()))
    def read(data: bytes) -> None:
        budget.executions += 1
        path.write_bytes(data)
        with warnings.catch_warnings(), time_limit(HANG_SECONDS):
            warnings.simplefilter("ignore")
            assert read_file(path) in ("ok", "input error")

    budget.run("read path", read)


@pytest.fixture(scope="module")
def listener(tmp_path_factory) -> Iterator[int]:
    errors: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(f"{args.thread}: {args.exc_value!r}")
    config = ServeConfig(
        aet=AET,
        port=0,
        host="127.0.0.1",
        min_free_mb=0,
        spool=tmp_path_factory.mktemp("fuzz") / "spool",
        series_timeout=60,
        acse_timeout=2,
        dimse_timeout=5,
        network_timeout=5,
    )
    serving = Listener(config)
    _, port = serving.start()
    yield port
    serving.stop(drain_timeout=2)
    serving.queue.close()
    threading.excepthook = previous
    assert errors == []


def send_and_wait_for_close(port: int, stream: bytes, timeout: float = 10) -> None:
    """Send everything, say we are done (EOF), and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(stream)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return  # the server closed on us mid-stream: that is an answer
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    return
            except TimeoutError:
                break
            except OSError:
                return
    raise AssertionError(f"the listener neither answered nor closed within {timeout} s")


def test_listener_answers_or_closes_and_keeps_serving(listener):
    budget = Budget(examples=30, share=0.5)

    @given(mutated(_stream_seeds()))
    def associate(stream: bytes) -> None:
        budget.executions += 1
        with time_limit(HANG_SECONDS):
            send_and_wait_for_close(listener, stream)
            with Association(listener, [(VERIFICATION, ExplicitVRLittleEndian)]) as legit:
                assert legit.echo() == 0

    budget.run("listener", associate)
