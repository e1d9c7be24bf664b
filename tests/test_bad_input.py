"""The bad-input corpus against a live listener and the read path: every case answered as expected.

One listener serves the whole table (as a box on a network would), so the last test also shows
that it is still serving afterwards and that no thread died on the way.
"""

from __future__ import annotations

import json
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from edgeimg.cli import cli
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from edgeimg.serve.security import parse_allow
from edgeimg.serve.spool import TEMP_PREFIX
from testsupport.corpus import (
    CORPUS,
    Case,
    encoded,
    instance,
    run_file_case,
    run_network_case,
)
from testsupport.rawdicom import (
    AET,
    CALLING,
    VERIFICATION,
    Association,
    Store,
    associate_rq,
    c_echo_rq,
    exchange,
    p_data,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
_thread_errors: list[str] = []


@pytest.fixture(scope="module")
def listener(tmp_path_factory) -> Iterator[tuple[Listener, int]]:
    """One listener for the module, with short timeouts; uncaught thread errors are recorded."""
    previous = threading.excepthook
    threading.excepthook = lambda args: _thread_errors.append(f"{args.thread}: {args.exc_value!r}")
    config = ServeConfig(
        aet=AET,
        port=0,
        host="127.0.0.1",
        spool=tmp_path_factory.mktemp("corpus") / "spool",
        allow=parse_allow([CALLING, "LEGIT"]),
        min_free_mb=0,
        series_timeout=60,
        acse_timeout=1,
        dimse_timeout=5,
        network_timeout=2,
    )
    serving = Listener(config)
    _, port = serving.start()
    yield serving, port
    serving.stop(drain_timeout=2)
    serving.queue.close()
    threading.excepthook = previous


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_corpus_case_answered_as_expected(case: Case, listener, tmp_path):
    _, port = listener
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = run_file_case(case, tmp_path) if case.kind == "file" else run_network_case(case, port)
    assert got == case.expected


def test_corpus_is_large_and_covers_every_kind():
    kinds = {case.kind for case in CORPUS}
    assert len(CORPUS) >= 25 and kinds == {"pdu", "store", "file"}
    assert len({case.name for case in CORPUS}) == len(CORPUS)


def test_pdu_sent_before_the_answer_kills_no_thread(listener):
    """Fuzzing found it: pynetdicom's DUL thread died on our AC after the peer's early P-DATA."""
    _, port = listener
    stream = associate_rq() + b"".join(p_data(1, c_echo_rq(), True))
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(stream)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    with Association(port, [(VERIFICATION, ExplicitVRLittleEndian)]) as legit:
        assert legit.echo() == 0
    assert _thread_errors == []


def test_refused_connections_give_their_slot_back_at_once(listener):
    """Fuzzing found it: a connection refused before any A-ASSOCIATE-RQ held its slot for the
    whole ACSE timeout, so a handful of HTTP requests locked every scanner out."""
    serving, port = listener
    for _ in range(2 * serving.config.max_associations):
        assert exchange(port, [b"GET / HTTP/1.1\r\n\r\n"]) == "abort 2/6, closed"
    with Association(port, [(VERIFICATION, ExplicitVRLittleEndian)]) as legit:
        assert legit.echo() == 0


def test_listener_still_serves_after_the_corpus(listener):
    """Runs after the table: real clients still work, nothing partial or misnamed is on disk."""
    serving, port = listener
    ae = AE(ae_title="LEGIT")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    legit = instance("legitimate after the corpus", size=64)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(legit).Status == 0
    finally:
        assoc.release()
    raw = instance("raw client after the corpus")
    with Association(
        port, [(VERIFICATION, ExplicitVRLittleEndian), (CTImageStorage, ExplicitVRLittleEndian)]
    ) as again:
        assert again.echo() == 0
        assert again.store(Store(CTImageStorage, raw.SOPInstanceUID, encoded(raw))) == 0

    names = {thread.name for thread in threading.enumerate() if thread.is_alive()}
    assert {"edgeimg-accept", "edgeimg-series"} <= names
    assert _thread_errors == []
    rows = {
        row["sop_uid"]: Path(row["path"])
        for row in serving.queue._db().execute("SELECT sop_uid, path FROM instances")
    }
    expected = {uid for case in CORPUS for uid in case.stored}
    assert set(rows) == expected | {legit.SOPInstanceUID, raw.SOPInstanceUID}
    on_disk = [p for p in (serving.spool.root / "series").rglob("*") if p.is_file()]
    assert sorted(on_disk) == sorted(rows.values())
    assert not list(serving.spool.root.rglob(f"{TEMP_PREFIX}*"))
    for sop_uid, path in rows.items():  # names are hashes: no dataset text in any path
        assert sop_uid not in str(path) and path.is_relative_to(serving.spool.root)


def test_edgeimg_run_names_each_bad_file_without_a_traceback(tmp_path):
    """The corpus files through `edgeimg run` as a user would: one line per file, exit 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    files = [case for case in CORPUS if case.kind == "file"]
    for case in files:
        (folder / f"{case.name}.dcm").write_bytes(case.file(case.name))  # type: ignore[misc]
    out = tmp_path / "out"
    done = CliRunner().invoke(
        cli, ["run", "cnn", str(folder), "--out", str(out), "--workers", "0", "--json"]
    )
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output
    named: dict[str, str] = {}
    for line in map(json.loads, (out / "results.jsonl").read_text().splitlines()):
        for name in [line.get("file"), *line.get("files", [])]:
            if name:
                named[Path(name).stem] = line["status"]
    assert set(named) == {case.name for case in files}
    assert set(named.values()) <= {"error", "skipped"}
