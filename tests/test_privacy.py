"""Every log line is ours: scrubbed warnings, log records, exception texts, queue and audit text."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from edgeimg.audit import AuditLog
from edgeimg.privacy import describe, scrub
from edgeimg.serve.eventlog import log
from edgeimg.serve.queue import Instance, Queue
from testsupport.peers import ROOT

MARK = "Zqxcanary"


@pytest.mark.parametrize(
    "text",
    [
        f'The string "{MARK} Smith" is unlikely to represent the intended person name',
        f"Invalid value for VR UI: '1.2.{MARK}'. Please see <https://x> for allowed values",
        f"invalid literal for int() with base 10: '{MARK}'",
        f'Value "O\'{MARK}" is not valid for elements with a VR of DS',
        f"bytes b'{MARK}\\xe9' and “{MARK}” and ‘{MARK}’ and `{MARK}`",
        f"PatientName={MARK}^Jane, AccessionNumber: {MARK}7; done",
        f"cut short: '{MARK}^Jürg",
        f"first line\n  second line '{MARK}'",
        f"InstanceNumber '{MARK}' is not an integer",
        f"SeriesInstanceUID '1.2.{MARK}' is not a valid UID",
        f"PatientID '1234' and StudyDate '20240101', OtherPatientNames: {MARK}",
    ],
)
def test_values_are_removed(text: str) -> None:
    cleaned = scrub(text)
    assert MARK not in cleaned
    assert "<value>" in cleaned
    assert "\n" not in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "Invalid value for VR UI: '1.2.840.10008.5.1.4.1.1.2'.",
        "Incorrect value for Specific Character Set 'ISO IR 192' - assuming 'ISO_IR 192'",
        "'utf-8' codec can't decode byte 0xe9 in position 3: invalid continuation byte",
        "[Errno 2] No such file or directory: '/spool/1.2.3/1.2.3.4.dcm'",
        "KeyError: 'PatientName' (VR 'PN', count '12')",
        "the model's window doesn't fit this slice",
        "x.dcm: NumberOfFrames '1A' is not an integer; PhotometricInterpretation 'YBR_FOO'",
        "x.dcm: SOPInstanceUID '1.2.3;rm -rf /' is not a valid UID",
    ],
)
def test_what_and_where_are_kept(text: str) -> None:
    """UIDs, keywords, VRs, character sets, codecs, paths and small numbers say what, not who."""
    assert scrub(text) == text


def test_describe_names_the_type_and_stays_short() -> None:
    assert describe(ValueError(f"bad '{MARK}'")) == "ValueError: bad <value>"
    assert describe(KeyError()) == "KeyError"
    assert len(describe(RuntimeError("x" * 5000))) < 500


def test_log_lines_are_scrubbed(capsys) -> None:
    log("job_failed", series_uid="1.2.3.4", error=f"ValueError: '{MARK}'", files=[f"'{MARK}'"])
    line = json.loads(capsys.readouterr().err)
    assert line["event"] == "job_failed" and line["series_uid"] == "1.2.3.4"
    assert MARK not in json.dumps(line)


def test_audit_lines_are_scrubbed(tmp_path) -> None:
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        audit.record("job_failed", job=1, error=f"ValueError: bad '{MARK}'", nested={"why": [MARK]})
    text = (tmp_path / "audit.jsonl").read_text()
    assert f"'{MARK}'" not in text and "ValueError: bad <value>" in text
    assert '"why": ["Zqxcanary"]' in text  # a bare word is not an exception text


def test_queue_failure_text_is_scrubbed(tmp_path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    instance = Instance(
        "1.2.3.4.1",
        "1.2.3.4",
        "1.2.3",
        "1.2.840.10008.5.1.4.1.1.2",
        "CT",
        "/x/1",
        10,
        "ab",
        "SCANNER",
        "127.0.0.1",
        1,
    )
    queue.add_instance(instance)
    assert queue.claim_series() == ["1.2.3.4"]
    (job,) = queue.add_jobs("1.2.3.4", ["cnn"])
    queue.finish_job(job, "failed", error=f"ValueError: '{MARK}^Jane'")
    queue.close()
    with sqlite3.connect(tmp_path / "q.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert MARK not in dump and "ValueError: <value>" in dump


def _run_python(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_library_output_becomes_scrubbed_events() -> None:
    """Warnings, library log records and uncaught exceptions (any thread): one JSON event each."""
    done = _run_python(f"""
        import logging, threading
        import pydicom.config
        pydicom.config.debug(True, default_handler=True)  # a stream handler of pydicom's own
        pydicom.config.debug(False)
        from edgeimg.privacy import capture
        capture()
        from highdicom.valuerep import check_person_name
        check_person_name("{MARK} Smith")
        from pydicom.dataset import Dataset
        Dataset().SOPInstanceUID = "1.2.{MARK}"
        logging.getLogger("pynetdicom").error("peer %s said %r", "{MARK}", b"{MARK}",
                                              exc_info=ValueError("'{MARK}'"))
        def fail():
            raise RuntimeError("thread '{MARK}'")
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
        raise ValueError("main '{MARK}'")
        """)
    assert MARK not in done.stdout + done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds.count("library_warning") == 2, done.stderr
    assert {"library_log", "thread_exception", "uncaught_exception"} <= set(kinds)
    highdicom = next(e for e in events if "person name" in e.get("message", ""))
    assert highdicom["category"] == "UserWarning"
    assert highdicom["message"].startswith("The string <value> is unlikely")
    uncaught = next(e for e in events if e["event"] == "uncaught_exception")
    assert uncaught["error"] == "ValueError: main <value>" and uncaught["where"]


def test_repeats_are_counted_not_repeated() -> None:
    done = _run_python(f"""
        from edgeimg.privacy import capture
        capture()
        from highdicom.valuerep import check_person_name
        for index in range(120):
            check_person_name(f"{MARK}{{index}} Smith")
        """)
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [event["occurrences"] for event in events] == [1, 10, 100]


def test_decoding_workers_capture_too() -> None:
    """`run` decodes and writes in forkserver processes; their warnings are events as well."""
    done = _run_python(f"""
        from highdicom.valuerep import check_person_name
        from edgeimg.pipeline import decoder_pool
        with decoder_pool(1) as pool:
            pool.submit(check_person_name, "{MARK} Smith").result()
        """)
    assert done.returncode == 0, done.stderr
    assert MARK not in done.stderr
    (event,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert event["event"] == "library_warning"
