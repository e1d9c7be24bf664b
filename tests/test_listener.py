"""The listener against real peers on loopback: dcmtk as the scanner, pynetdicom for bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from edgeimg.audit import AuditLog
from edgeimg.audit import read as read_audit
from edgeimg.dicom.framing import framing_error
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from edgeimg.serve.preassociation import read_exactly
from edgeimg.serve.pynetdicom_adapter import LOG_HANDLERS, FastStoreResponses
from edgeimg.serve.queue import Queue
from edgeimg.serve.security import parse_allow, server_tls_context
from edgeimg.serve.spool import INCOMING, TEMP_PREFIX
from testsupport.peers import (
    ct_instance,
    dataset_bytes,
    free_port,
    needs_dcmtk,
    self_signed,
    start_serve,
    stop,
    wait_for_port,
    write,
)

AET = "EDGE"
PROPOSE = {  # storescu proposes uncompressed syntaxes unless told otherwise
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.91": "-xw",
}
REAL_FILES = [
    "CT_small.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "MR_small_bigendian.dcm",
]


class Recorder:
    """A pipeline that remembers which series it was told about."""

    def __init__(self) -> None:
        self.series: list[str] = []
        self.event = threading.Event()

    def on_series_complete(self, series_uid: str) -> None:
        self.series.append(series_uid)
        self.event.set()


@pytest.fixture
def serve(tmp_path):
    """Start an in-process listener with test-sized timeouts; stopped after the test."""
    started: list[Listener] = []

    def start(pipeline=None, **overrides) -> tuple[Listener, int]:
        values = dict(
            aet=AET,
            port=0,
            host="127.0.0.1",
            spool=tmp_path / "spool",
            min_free_mb=0,
            series_timeout=60,
            acse_timeout=2,
            dimse_timeout=5,
            network_timeout=5,
        )
        values.update(overrides)
        listener = Listener(ServeConfig(**values), pipeline)
        _, port = listener.start()
        started.append(listener)
        return listener, port

    yield start
    for listener in started:
        listener.stop(drain_timeout=2)
        listener.queue.close()


def _dcmtk(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _rows(listener: Listener) -> list[sqlite3.Row]:
    return list(listener.queue._db().execute("SELECT * FROM instances"))


def _associate(port: int, calling: str = "SCU", called: str = AET, contexts=None):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    for context in contexts or ["1.2.840.10008.1.1"]:
        ae.add_requested_context(context, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", port, ae_title=called)


def _store_raw(assoc, sop_class: str, sop_uid: str, payload: bytes) -> int:
    """C-STORE `payload` as the dataset bytes, whatever they hold (pynetdicom would re-encode)."""
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = sop_class, sop_uid
    request.DataSet = BytesIO(payload)
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class)
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    assoc.dimse.send_msg(request, context.context_id)
    _, response = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    return response.Status


def _encoded(ds) -> bytes:
    return encode(ds, False, True)


@needs_dcmtk
def test_dcmtk_store_keeps_dataset_bytes_and_logs_no_patient_data(serve, tmp_path, capfd):
    listener, port = serve()
    assert _dcmtk("echoscu", "-aec", AET, "127.0.0.1", str(port)).returncode == 0
    files = [Path(get_testdata_file(name)) for name in REAL_FILES]
    ours = ct_instance()
    files.append(write(ours, tmp_path / "ct.dcm"))
    for path in files:
        propose = PROPOSE.get(str(read_file_meta_info(path).TransferSyntaxUID), "-xe")
        result = _dcmtk("storescu", propose, "-aec", AET, "127.0.0.1", str(port), str(path))
        assert result.returncode == 0, result.stderr
    stored = {row["sop_uid"]: Path(row["path"]) for row in _rows(listener)}
    assert len(stored) == len(files)
    sent = {str(read_file_meta_info(path).MediaStorageSOPInstanceUID): path for path in files}
    # dcmtk re-encodes what it sends (group lengths, padding), so real files compare decoded;
    # our own plain file goes through unchanged and must come out byte for byte.
    for sop_uid, path in stored.items():
        original, received = dcmread(sent[sop_uid]), dcmread(path)
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert received.PixelData == original.PixelData, sent[sop_uid].name
    assert dataset_bytes(stored[ours.SOPInstanceUID]) == dataset_bytes(files[-1])
    logged = capfd.readouterr().err
    assert "Secret" not in logged and "SECRET-ID" not in logged and '"stored"' in logged


@needs_dcmtk
def test_duplicate_is_acknowledged_and_stored_once(serve, tmp_path):
    listener, port = serve()
    path = write(ct_instance(), tmp_path / "ct.dcm")
    for _ in range(2):
        assert _dcmtk("storescu", "-aec", AET, "127.0.0.1", str(port), str(path)).returncode == 0
    assert len(_rows(listener)) == 1
    assert len(list((tmp_path / "spool" / "series").rglob("*.dcm"))) == 1


@needs_dcmtk
def test_received_instances_are_audited_without_patient_data(serve, tmp_path):
    listener, port = serve()
    listener.audit = AuditLog(tmp_path / "audit.jsonl")
    ds = ct_instance()
    path = write(ds, tmp_path / "ct.dcm")
    for _ in range(2):
        assert (
            _dcmtk(
                "storescu", "-aet", "CT1", "-aec", AET, "127.0.0.1", str(port), str(path)
            ).returncode
            == 0
        )
    listener.stop()  # the audit lines are written off the response path; stop drains them
    lines = list(read_audit(tmp_path / "audit.jsonl"))
    assert [(line["event"], line["duplicate"]) for line in lines] == [
        ("received", False),
        ("received", True),
    ]
    assert lines[0]["sop_instance_uid"] == ds.SOPInstanceUID and lines[0]["calling_aet"] == "CT1"
    assert (lines[0]["series_uid"], lines[0]["study_uid"]) == (
        ds.SeriesInstanceUID,
        ds.StudyInstanceUID,
    )
    assert "Secret" not in (tmp_path / "audit.jsonl").read_text()


@needs_dcmtk
def test_allow_list_and_called_aet(serve):
    _, port = serve(allow=parse_allow(["SCANNER", "CT2@10.0.0.5"]))
    echo = ("echoscu", "-aec", AET, "127.0.0.1", str(port))
    assert _dcmtk(*echo, "-aet", "SCANNER").returncode == 0
    assert _dcmtk(*echo, "-aet", "OTHER").returncode != 0
    for calling, called, reason in (("OTHER", AET, 3), ("CT2", AET, 3), ("SCANNER", "WRONG", 7)):
        assoc = _associate(port, calling, called)
        assert assoc.is_rejected
        rejection = assoc.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, reason)


def test_server_associations_skip_pynetdicom_log_formatting(serve):
    listener, port = serve()
    assoc = _associate(port)
    try:
        (server_side,) = listener._server.active_associations
        assert isinstance(server_side.dimse, FastStoreResponses)
        for event, handler in LOG_HANDLERS:
            assert handler not in [bound for bound, _ in server_side.get_handlers(event)]
        assert not assoc.send_c_echo().Status  # and a request still gets its answer
    finally:
        assoc.release()


def test_pdu_bodies_are_read_whole_or_up_to_the_close():
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(5)
        threading.Timer(0.05, peer.sendall, [b"b" * 70_000]).start()
        peer.sendall(b"a" * 30_000)
        assert read_exactly(ours, 100_000) == b"a" * 30_000 + b"b" * 70_000
        peer.sendall(b"cut")
        peer.shutdown(socket.SHUT_WR)
        assert read_exactly(ours, 1 << 32) == b"cut"  # the claimed length is not allocated


def test_idle_connection_takes_no_slot_and_is_closed_by_artim(serve):
    _, port = serve(max_associations=1, artim=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        time.sleep(0.2)
        assoc = _associate(port)  # the only slot is free: a connection is not an association
        assert assoc.is_established
        assoc.release()
        assert idle.recv(64) == b""  # closed by the ARTIM timer, no A-ABORT or other answer


@needs_dcmtk
def test_tls_store_while_a_silent_tls_peer_waits(serve, tmp_path):
    key, cert = self_signed(tmp_path)
    listener, port = serve(tls=server_tls_context(cert, key))
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        path = write(ct_instance(), tmp_path / "ct.dcm")
        tls = ("+tls", str(key), str(cert), "+cf", str(cert))
        started = time.monotonic()
        result = _dcmtk("storescu", *tls, "-aec", AET, "127.0.0.1", str(port), str(path))
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 1.5  # not held up by the silent peer's handshake
        assert len(_rows(listener)) == 1
        assert _dcmtk("echoscu", "-aec", AET, "127.0.0.1", str(port), timeout=10).returncode != 0
    finally:
        silent.close()


@needs_dcmtk
def test_tls_ca_requires_a_client_certificate(serve, tmp_path):
    key, cert = self_signed(tmp_path)
    _, port = serve(tls=server_tls_context(cert, key, ca=cert))
    echo = ("echoscu", "-aec", AET, "+cf", str(cert), "127.0.0.1", str(port))
    assert _dcmtk(echo[0], "+tls", str(key), str(cert), *echo[1:]).returncode == 0
    assert _dcmtk(echo[0], "+tla", *echo[1:]).returncode != 0


def test_bad_instances_get_ps34_statuses_and_the_server_goes_on(serve):
    listener, port = serve()
    ct = ct_instance()
    contexts = [ct.SOPClassUID, MRImageStorage]
    assoc = _associate(port, contexts=contexts)
    assert assoc.is_established
    try:
        truncated = ct_instance()
        truncated.PixelData = truncated.PixelData[:100]
        bad_uid = ct_instance()
        bad_uid.SeriesInstanceUID = "1.2.abc"
        other_class = ct_instance()
        other_class.SOPClassUID = MRImageStorage
        garbage = b"\x08\x00\x16\x00UI\xff\x7f1.2"
        cut = ct_instance()
        cases = [
            (truncated, _encoded(truncated), 0xA900),
            (cut, _encoded(cut)[:-50], 0xC000),
            (bad_uid, _encoded(bad_uid), 0xA900),
            (other_class, _encoded(other_class), 0xA900),
            (ct, garbage, 0xC000),
        ]
        for ds, payload, expected in cases:
            status = _store_raw(assoc, ct.SOPClassUID, ds.SOPInstanceUID, payload)
            assert status == expected, f"0x{status:04X}"
        assert _store_raw(assoc, ct.SOPClassUID, ct.SOPInstanceUID, _encoded(ct)) == 0
    finally:
        assoc.release()
    assert [row["sop_uid"] for row in _rows(listener)] == [ct.SOPInstanceUID]
    assert not list(listener.spool.root.rglob(f"{TEMP_PREFIX}*"))


def test_disk_watermark_refuses_with_a700_and_writes_nothing(serve):
    listener, port = serve(min_free_mb=10**9)
    ct = ct_instance()
    assoc = _associate(port, contexts=[ct.SOPClassUID])
    try:
        assert assoc.send_c_store(ct).Status == 0xA700
        # Data that would be refused anyway gets its own status first, the disk notwithstanding.
        assert _store_raw(assoc, ct.SOPClassUID, "1.2.3.4", _encoded(ct)[:-7]) == 0xC000
    finally:
        assoc.release()
    assert not _rows(listener)
    for directory in ("series", INCOMING):
        assert not [p for p in (listener.spool.root / directory).rglob("*") if p.is_file()]


@pytest.mark.parametrize("pdu_type", [0x04, 0x01])
def test_oversized_pdu_is_refused_without_buffering(serve, pdu_type):
    _, port = serve()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack(">BBL", pdu_type, 0, 1 << 31) + b"\0" * 64)
        reply = sock.recv(64)
        assert reply[:1] == b"\x07"  # A-ABORT, not a wait for two gigabytes
        assert sock.recv(64) == b""
    assoc = _associate(port)
    assert assoc.is_established
    assoc.release()


def test_peer_stalled_mid_pdu_loses_its_connection(serve):
    _, port = serve(network_timeout=1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 200) + b"\0" * 10)  # promises 200, sends 10
        started = time.monotonic()
        assert sock.recv(64) in (b"", b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00")
        assert time.monotonic() - started < 4


def test_series_complete_on_release_and_on_expected_count(serve):
    recorder = Recorder()
    listener, port = serve(recorder, complete_on_release=True)
    series, counted = ct_instance(), ct_instance()
    assoc = _associate(port, contexts=[series.SOPClassUID])
    assert assoc.send_c_store(series).Status == 0
    assert assoc.send_c_store(ct_instance(series.SeriesInstanceUID, 2)).Status == 0
    for index in (1, 2):
        item = ct_instance(counted.SeriesInstanceUID, index)
        item.ImagesInAcquisition = 2
        assert assoc.send_c_store(item).Status == 0
    assert recorder.series == [counted.SeriesInstanceUID]
    assoc.release()
    assert recorder.event.wait(5)
    deadline = time.monotonic() + 5
    while len(recorder.series) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert recorder.series == [counted.SeriesInstanceUID, series.SeriesInstanceUID]
    summary = {item["series_uid"]: item for item in listener.queue.series_summary()}
    assert summary[series.SeriesInstanceUID]["state"] == "complete"
    assert summary[series.SeriesInstanceUID]["instances"] == 2


class _SlowAfterRelease(logging.Handler):
    """Holds the acceptor's association thread between its release reply and EVT_RELEASED,
    so that the peer's close of the connection is seen first."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "Association Released":
            time.sleep(0.5)


def test_release_completes_the_series_when_the_close_is_seen_first(serve):
    recorder = Recorder()
    listener, port = serve(recorder, complete_on_release=True)
    logger, slow = logging.getLogger("pynetdicom"), _SlowAfterRelease()
    level = logger.level
    logger.addHandler(slow)
    logger.setLevel(logging.INFO)
    try:
        series = ct_instance()
        assoc = _associate(port, contexts=[series.SOPClassUID])
        assert assoc.send_c_store(series).Status == 0
        assoc.release()
        assert recorder.event.wait(5)
    finally:
        logger.removeHandler(slow)
        logger.setLevel(level)
    assert recorder.series == [series.SeriesInstanceUID]


def test_an_abort_does_not_complete_the_series(serve):
    recorder = Recorder()
    listener, port = serve(recorder, complete_on_release=True)
    series = ct_instance()
    assoc = _associate(port, contexts=[series.SOPClassUID])
    assert assoc.send_c_store(series).Status == 0
    assoc.abort()
    assert not recorder.event.wait(1)


def test_quiet_series_completes_after_the_timeout(serve):
    recorder = Recorder()
    _, port = serve(recorder, series_timeout=0.3)
    ct = ct_instance()
    assoc = _associate(port, contexts=[ct.SOPClassUID])
    assert assoc.send_c_store(ct).Status == 0
    assert recorder.event.wait(5)
    assoc.release()
    assert recorder.series == [ct.SeriesInstanceUID]


def _sender(port: int, instances, acked: list[str], stop_flag: threading.Event) -> None:
    assoc = _associate(port, calling="SCANNER", contexts=[instances[0].SOPClassUID])
    try:
        for ds in instances:
            if stop_flag.is_set() or not assoc.is_established:
                return
            if getattr(assoc.send_c_store(ds), "Status", None) == 0:
                acked.append(ds.SOPInstanceUID)
    except Exception:
        return
    finally:
        if assoc.is_established:
            assoc.release()


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    port = free_port()
    args = ("--aet", AET, "--spool", "spool", "--min-free-mb", "0", "--host", "127.0.0.1")
    process = start_serve(*args, port=port, cwd=tmp_path)
    series = ct_instance()
    instances = [ct_instance(series.SeriesInstanceUID, i, size=64) for i in range(100)]
    acked: list[str] = []
    stop_flag = threading.Event()
    sender = threading.Thread(target=_sender, args=(port, instances, acked, stop_flag))
    sender.start()
    deadline = time.monotonic() + 20
    while len(acked) < 30 and time.monotonic() < deadline and sender.is_alive():
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stop_flag.set()
    sender.join(10)
    assert 30 <= len(acked) < 100
    spool = tmp_path / "spool"
    for directory in (next((spool / "series").iterdir()), spool / INCOMING):
        (directory / f"{TEMP_PREFIX}left-by-kill").write_bytes(b"partial")

    process = start_serve(*args, port=port, cwd=tmp_path)
    try:
        db = sqlite3.connect(spool / "queue.sqlite")
        rows = {
            uid: (path, digest)
            for uid, path, digest in db.execute("SELECT sop_uid, path, sha256 FROM instances")
        }
        for uid in acked:
            path, digest = rows[uid]
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
        assert not list(spool.rglob(f"{TEMP_PREFIX}*"))
        listing = subprocess.run(
            [*_edgeimg(), "queue", "--spool", str(spool), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        document = json.loads(listing.stdout)
        [entry] = document["series"]
        assert entry["series_uid"] == series.SeriesInstanceUID
        assert entry["instances"] == len(rows) >= len(acked)
    finally:
        assert stop(process) == 0


def test_sigterm_drains_in_flight_association(tmp_path):
    port = free_port()
    settings = f'[serve]\naet = "{AET}"\nmin-free-mb = 0\nmodel = []\nforward = ["P@h:104"]\n'
    (tmp_path / "serve.toml").write_text(settings)
    process = start_serve("--config", "serve.toml", "--spool", "spool", port=port, cwd=tmp_path)
    ct = ct_instance()
    assoc = _associate(port, contexts=[ct.SOPClassUID])
    assert assoc.is_established
    process.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert assoc.send_c_store(ct).Status == 0  # in flight: still served
    with pytest.raises(OSError):
        wait_for_port(port, timeout=0.5)  # no longer accepting
    assoc.release()
    assert process.wait(20) == 0
    assert '"drained": true' in (tmp_path / "serve.log").read_text()
    assert Queue(tmp_path / "spool" / "queue.sqlite").config()["forwards"] == ["P@h:104"]


def _edgeimg() -> list[str]:
    return [sys.executable, "-m", "edgeimg"]


def test_serve_refuses_unknown_models_and_bad_flags_before_listening(tmp_path):
    from click.testing import CliRunner

    from edgeimg.cli import cli

    port = str(free_port())
    (tmp_path / "bad.toml").write_text("[serve]\nno-such-setting = 1\n")
    cases = (
        ["--model", "no-such-model"],
        ["--allow", "@host"],
        ["--tls-cert", __file__],
        ["--config", str(tmp_path / "bad.toml")],
        ["--forward", "nonsense"],
    )
    for args in cases:
        result = CliRunner().invoke(cli, ["serve", "--aet", AET, "--port", port, *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "name", [*REAL_FILES, "MR_small.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm", "MR_small_RLE.dcm"]
)
def test_framing_accepts_real_files_and_catches_every_cut(name):
    path = Path(get_testdata_file(name))
    syntax = read_file_meta_info(path).TransferSyntaxUID
    raw = dataset_bytes(path)
    assert framing_error(raw, syntax) is None
    if not syntax.is_deflated:
        for cut in (1, 3, 7, len(raw) // 2):
            assert framing_error(raw[:-cut], syntax), cut
