"""The audit log: intact lines under concurrent writers, append-only, and no patient identity."""

from __future__ import annotations

import json
import stat
import threading
from datetime import datetime

import pytest

from edgeimg.audit import AuditLog, AuditWriter, read


def test_record_and_read(tmp_path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    with AuditLog(path) as log:
        log.record("received", calling_aet="SCANNER", host="10.0.0.5", sop_instance_uid="1.2.3")
        log.record("forwarded", destination="PACS@10.0.0.9:104", model="cnn", engine_key="abc")
    events = list(read(path))
    assert [event["event"] for event in events] == ["received", "forwarded"]
    assert events[0]["calling_aet"] == "SCANNER" and events[1]["engine_key"] == "abc"
    assert datetime.fromisoformat(events[0]["time"]).utcoffset().total_seconds() == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "field",
    [
        "PatientName",
        "PatientID",
        "patient_id",
        "PatientBirthDate",
        "OtherPatientIDs",
        "mrn",
        "AccessionNumber",
        "ReferringPhysicianName",
        "name",
    ],
)
def test_patient_fields_refused(tmp_path, field: str) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log, pytest.raises(ValueError, match=field):
        log.record("received", **{field: "Doe^John"})
    assert path.read_text() == ""


def test_nested_patient_fields_refused(tmp_path) -> None:
    with AuditLog(tmp_path / "audit.jsonl") as log, pytest.raises(ValueError, match="PatientID"):
        log.record("forwarded", results=[{"sop_uid": "1.2", "PatientID": "123"}])


def test_existing_content_preserved(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"event": "earlier"}\n')
    with AuditLog(path) as log:
        log.record("inferred", model="cnn")
    with AuditLog(path) as log:
        log.record("deidentified", series_uid="2.25.1")
    assert [event["event"] for event in read(path)] == ["earlier", "inferred", "deidentified"]


def test_torn_last_line_is_skipped(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.record("received", sop_instance_uid="1.2.3")
    with open(path, "a") as handle:
        handle.write('{"event": "forwar')
    assert [event["event"] for event in read(path)] == ["received"]


def test_concurrent_writers_produce_intact_lines(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    writers, per_writer = 8, 50
    padding = "x" * 5000  # longer than a pipe buffer's atomic size, to catch split writes
    logs = [AuditLog(path), AuditLog(path)]  # two handles, as two processes would have

    def write(number: int) -> None:
        log = logs[number % 2]
        for index in range(per_writer):
            log.record("inferred", writer=number, index=index, padding=padding)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == writers * per_writer
    seen = {(event["writer"], event["index"]) for event in map(json.loads, lines)}
    assert len(seen) == writers * per_writer


def test_closed_log_refuses(tmp_path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.record("received")


def test_record_many_checks_every_event_before_writing_any(tmp_path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="PatientName"):
        log.record_many([("received", {"series_uid": "1.2"}), ("received", {"PatientName": "X"})])
    log.record_many([("received", {"series_uid": "1.2"}), ("job_done", {"model": "cnn"})])
    log.close()
    assert [entry["event"] for entry in read(tmp_path / "audit.jsonl")] == ["received", "job_done"]


def test_writer_batches_what_queued_up_and_reports_refusals(tmp_path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    failures = []
    writer = AuditWriter(lambda error, events: failures.append((str(error), events)))
    for number in range(500):
        writer.record(log, "received", sop_instance_uid=f"1.2.{number}")
    writer.record(log, "received", patient_id="P-0042")
    writer.close()
    log.close()
    entries = list(read(tmp_path / "audit.jsonl"))
    written = {entry["sop_instance_uid"] for entry in entries}
    assert written == {f"1.2.{number}" for number in range(500)}
    assert [refused for _, refused in failures] == [[{"patient_id": "P-0042"}]]
    assert "patient_id" in failures[0][0]
    assert "P-0042" not in (tmp_path / "audit.jsonl").read_text()
