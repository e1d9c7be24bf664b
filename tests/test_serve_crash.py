"""kill -9 in the middle of a 200-instance send, then restart: nothing acknowledged is lost.

dcmtk `storescu` is the scanner, Orthanc the PACS. The server is SIGKILLed while storescu is
sending; it is restarted on the same spool and port and what did not get a success is sent again.
Then: every acknowledged instance is in the spool byte for byte, each is stored once, the series
is processed once, each result is at the PACS exactly once, and no temp file is left.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from edgeimg.serve.queue import Instance, Queue
from edgeimg.serve.spool import QUEUE_NAME, TEMP_PREFIX, Spool
from edgeimg.synth.dicom import write_study
from testsupport.pacs import Orthanc
from testsupport.peers import dataset_bytes, free_port, needs_dcmtk, start_serve, stop

needs_orthanc = pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available()))
COUNT = 200
KILL_AFTER = 60  # instances stored before the SIGKILL


def storescu(port: int, files: list[Path]) -> subprocess.Popen:
    """One association with every file; `-v` says which file got which response."""
    command = ["storescu", "-v", "-aet", "SCANNER", "-aec", "EDGEIMG", "127.0.0.1", str(port)]
    return subprocess.Popen(
        [*command, *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"TCP_NODELAY": "1"},
    )


def acknowledged(output: str) -> set[Path]:
    """Files storescu got a success status for, from its verbose log."""
    done, current = set(), None
    for line in output.splitlines():
        sending = re.match(r"I: Sending file: (.+)$", line)
        if sending:
            current = Path(sending[1])
        elif "Received Store Response (Success)" in line and current is not None:
            done.add(current)
            current = None
    return done


def stored_lines(log: Path) -> int:
    return log.read_bytes().count(b'"event": "stored"')


@pytest.mark.integration
@needs_dcmtk
@needs_orthanc
def test_kill_9_mid_send_loses_nothing_acknowledged(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEIMG_ENGINES", str(tmp_path / "engines"))
    study = write_study(tmp_path / "study", series=1, slices=COUNT, size=64, seed=5)
    files = sorted((study.out_dir / "series-001").glob("*.dcm"))
    spool, port = tmp_path / "spool", free_port()
    args = (
        "--aet",
        "EDGEIMG",
        "--host",
        "127.0.0.1",
        "--spool",
        str(spool),
        "--model",
        "cnn",
        "--complete-on-release",
        "--series-timeout",
        "600",
        "--min-free-mb",
        "0",
    )
    with Orthanc("PACS") as pacs:
        server = start_serve(*args, "--forward", pacs.address, port=port, cwd=tmp_path)
        try:
            sender = storescu(port, files)
            deadline = time.monotonic() + 60
            while stored_lines(tmp_path / "serve.log") < KILL_AFTER:
                assert sender.poll() is None and time.monotonic() < deadline, "send ended early"
                time.sleep(0.005)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            first = acknowledged(sender.communicate(timeout=30)[0])
        finally:
            stop(server, signal.SIGKILL)
        assert KILL_AFTER - 1 <= len(first) < COUNT

        server = start_serve(*args, "--forward", pacs.address, port=port, cwd=tmp_path)
        try:
            rest = [path for path in files if path not in first]
            resend = storescu(port, rest)
            second = acknowledged(resend.communicate(timeout=60)[0])
            assert resend.returncode == 0 and second == set(rest)

            def arrived() -> list[str]:
                return pacs.instances() if _forwards_done(spool) else []

            pacs.wait_for(arrived, timeout=120)
        finally:
            assert stop(server, signal.SIGTERM) == 0
        at_pacs = pacs.instances()
        outputs = [output for job in _jobs(spool) for output in json.loads(job["outputs"])]
        result_uids = [
            str(dcmread(output, stop_before_pixels=True).SOPInstanceUID) for output in outputs
        ]
        copies = {uid: len(pacs.find(sop_instance_uid=uid)) for uid in result_uids}

    rows = _rows(spool, "SELECT sop_uid, path, sha256 FROM instances")
    by_uid = {row["sop_uid"]: row for row in rows}
    assert len(rows) == COUNT
    for path in files:
        row = by_uid[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        spooled = Path(row["path"])
        assert dataset_bytes(spooled) == dataset_bytes(path), path.name
        assert hashlib.sha256(spooled.read_bytes()).hexdigest() == row["sha256"]
    (series,) = _rows(spool, "SELECT state, instances FROM series")
    assert (series["state"], series["instances"]) == ("done", COUNT)
    (job,) = _jobs(spool)
    assert (job["model"], job["state"], job["attempts"]) == ("cnn", "done", 1)
    lines = (spool / "results" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert outputs and copies == {uid: 1 for uid in result_uids}
    assert len(at_pacs) == len(result_uids)
    assert not list(spool.rglob(f"{TEMP_PREFIX}*"))


QUIET = 3.0  # --series-timeout of the slow-restart test


@pytest.mark.integration
@needs_dcmtk
@needs_orthanc
def test_slow_restart_waits_for_the_resend_and_a_late_slice_revises(tmp_path, monkeypatch):
    """Killed with part of a series stored and down for longer than --series-timeout: the
    series still waits the timeout after the restart, so the resent rest makes one result.
    A slice arriving after that result was sent makes a revision whose SR names it."""
    monkeypatch.setenv("EDGEIMG_ENGINES", str(tmp_path / "engines"))
    study = write_study(tmp_path / "study", series=1, slices=11, size=64, seed=3)
    files = sorted((study.out_dir / "series-001").glob("*.dcm"))
    spool, port = tmp_path / "spool", free_port()
    with Orthanc("PACS") as pacs:
        args = ("--aet", "EDGEIMG", "--host", "127.0.0.1", "--spool", str(spool), "--model", "cnn")
        args += ("--series-timeout", str(QUIET), "--min-free-mb", "0", "--forward", pacs.address)
        server = start_serve(*args, port=port, cwd=tmp_path)
        try:
            assert storescu(port, files[:6]).wait(30) == 0
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            assert [row["state"] for row in _rows(spool, "SELECT state FROM series")] == [
                "received"
            ]
            time.sleep(QUIET + 1)  # down for longer than the series timeout
            server = start_serve(*args, port=port, cwd=tmp_path)
            time.sleep(QUIET / 2)  # the watcher has looked several times meanwhile
            assert [row["state"] for row in _rows(spool, "SELECT state FROM series")] == [
                "received"
            ]
            assert storescu(port, files[6:10]).wait(30) == 0
            pacs.wait_for(lambda: _results_sent(spool, 1), timeout=120)
            assert storescu(port, files[10:]).wait(30) == 0  # a late slice
            pacs.wait_for(lambda: _results_sent(spool, 2), timeout=120)
            summary = _queue_json(spool)
        finally:
            assert stop(server, signal.SIGTERM) == 0
        reports = [
            dcmread(BytesIO(pacs.instance_file(ident))) for ident in pacs.find(modality="SR")
        ]

    first, second = (
        dcmread(json.loads(job["outputs"])[0], stop_before_pixels=True) for job in _jobs(spool)
    )
    assert _sources(first) == 10 and "PredecessorDocumentsSequence" not in first
    assert _sources(second) == 11 and _predecessors(second) == {first.SOPInstanceUID}
    named = {uid for report in reports for uid in _predecessors(report)}
    current = [report.SOPInstanceUID for report in reports if report.SOPInstanceUID not in named]
    assert len(reports) == 2 and current == [second.SOPInstanceUID]  # one current result
    [series] = summary["series"]
    assert (series["state"], series["revision"], series["instances"]) == ("revised", 1, 11)


def _sources(sr: Dataset) -> int:
    [study] = sr.CurrentRequestedProcedureEvidenceSequence
    return sum(len(series.ReferencedSOPSequence) for series in study.ReferencedSeriesSequence)


def _predecessors(sr: Dataset) -> set[str]:
    """SOP Instance UIDs an SR names as its predecessors."""
    return {
        item.ReferencedSOPInstanceUID
        for study in sr.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }


def _results_sent(spool: Path, jobs: int) -> bool:
    """`jobs` jobs done, and each output of them forwarded."""
    done = [job for job in _jobs(spool) if job["state"] == "done"]
    outputs = sum(len(json.loads(job["outputs"])) for job in done)
    return len(done) == jobs and _forwards_done(spool) and len(_forwards(spool)) == outputs


def _queue_json(spool: Path) -> dict:
    """`edgeimg queue --json` as a user runs it."""
    command = [sys.executable, "-m", "edgeimg", "queue", "--spool", str(spool), "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout)


def test_a_row_whose_file_never_landed_is_dropped_on_restart(tmp_path):
    """Row and file are made durable side by side: a crash between leaves a row without file."""
    spool = Spool(tmp_path / "spool", min_free_mb=0)
    landed, lost = spool.path_for("1.9", "1.9.1"), spool.path_for("1.9", "1.9.2")
    spool.write(landed, [b"DICM"], 4)
    queue = Queue(spool.queue_path)
    queue.add_instances(
        [
            _instance("1.9.1", "1.9", landed),
            _instance("1.9.2", "1.9", lost),
            _instance("1.8.1", "1.8", spool.path_for("1.8", "1.8.1")),
        ]
    )
    Listener(ServeConfig(aet="EDGEIMG", spool=spool.root, min_free_mb=0)).recover()
    assert [row["sop_uid"] for row in _rows(spool.root, "SELECT sop_uid FROM instances")] == [
        "1.9.1"
    ]
    series = _rows(spool.root, "SELECT uid, instances FROM series")
    assert [(row["uid"], row["instances"]) for row in series] == [("1.9", 1)]


def _instance(sop_uid: str, series_uid: str, path: Path) -> Instance:
    return Instance(
        sop_uid=sop_uid,
        series_uid=series_uid,
        study_uid="1.7",
        sop_class="1.2",
        modality="CT",
        path=str(path),
        size=4,
        sha256="-",
        calling_aet="SCU",
        peer_host="127.0.0.1",
    )


def _rows(spool: Path, sql: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(spool / QUEUE_NAME)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _jobs(spool: Path) -> list[sqlite3.Row]:
    return _rows(spool, "SELECT * FROM jobs")


def _forwards(spool: Path) -> list[sqlite3.Row]:
    return _rows(spool, "SELECT * FROM forwards")


def _forwards_done(spool: Path) -> bool:
    states = [row["state"] for row in _forwards(spool)]
    return bool(states) and all(state == "done" for state in states)
