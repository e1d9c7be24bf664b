"""The SQLite queue: durable rows, series completion, crash recovery, retry."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
from click.testing import CliRunner

from edgeimg.cli import cli
from edgeimg.serve.queue import GroupCommit, Instance, Queue, database, instances, jobs
from edgeimg.serve.spool import QUEUE_NAME


def _instance(sop: str, series: str = "1.2.3", expected: int | None = None) -> Instance:
    return Instance(
        sop,
        series,
        "1.2",
        "1.2.840.10008.5.1.4.1.1.2",
        "CT",
        f"/x/{sop}",
        10,
        "ab",
        "SCANNER",
        "127.0.0.1",
        expected,
    )


def test_wal_and_full_sync(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    db = queue._db()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_duplicates_are_stored_once(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    assert queue.add_instance(_instance("1.1")) == (True, False)
    assert queue.add_instance(_instance("1.1")) == (False, False)
    [series] = queue.series_summary()
    assert series["instances"] == 1 and series["state"] == "received"


def test_expected_count_completes_the_series(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    assert queue.add_instance(_instance("1.1", expected=2)) == (True, False)
    assert queue.add_instance(_instance("1.2", expected=2)) == (True, True)
    assert queue.series_summary()[0]["state"] == "complete"


def test_quiet_series_complete_once(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.add_instance(_instance("1.1"))
    assert queue.quiet_series(60) == []
    time.sleep(0.05)
    assert queue.complete(queue.quiet_series(0.01)) == ["1.2.3"]
    assert queue.complete(["1.2.3"]) == []


def test_recover_requeues_running_work_and_retry(tmp_path):
    path = tmp_path / "q.sqlite"
    queue = Queue(path)
    queue.add_instance(_instance("1.1"))
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE series SET state = 'running'")
        db.execute(
            "INSERT INTO jobs (series_uid, model, state, updated) VALUES ('1.2.3', 'cnn',"
            " 'running', 0)"
        )
        db.execute(
            "INSERT INTO jobs (series_uid, model, state, error, updated) VALUES"
            " ('1.2.3', 'cnn', 'failed', 'boom', 0)"
        )
        db.execute(
            "INSERT INTO forwards (job_id, destination, path, state, updated) VALUES"
            " (2, 'PACS@h:104', '/r', 'failed', 0)"
        )
    assert Queue(path).recover() == 2
    states = dict(db.execute("SELECT id, state FROM jobs"))
    assert states == {1: "pending", 2: "failed"}
    assert queue.failures()[0]["error"] == "boom"
    assert queue.retry("2") == "job"
    assert queue.retry("forward:1") == "forward"
    assert queue.retry("forward:1") is None
    assert queue.retry("nonsense:x") is None
    assert not queue.failures()


def test_threads_share_the_queue(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    threads = [
        threading.Thread(
            target=lambda n=n: [queue.add_instance(_instance(f"{n}.{i}")) for i in range(20)]
        )
        for n in range(1, 5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert queue.series_summary()[0]["instances"] == 80


def test_group_commit_batches_threads_and_each_gets_its_own_answer(tmp_path, monkeypatch):
    queue = Queue(tmp_path / "q.sqlite")
    commits = GroupCommit(queue)
    answers: dict[str, tuple[bool, bool]] = {}

    def send(n: int) -> None:
        for i in range(20):
            sop = f"{n}.{i % 15}"  # the last five of each thread are duplicates
            answers[f"{n}.{i}"] = commits.add(_instance(sop, expected=60))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(inserted for inserted, _ in answers.values()) == 60
    assert sum(complete for _, complete in answers.values()) == 1
    assert queue.series_summary()[0]["instances"] == 60

    def broken(items):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(queue, "add_instances", broken)
    with pytest.raises(sqlite3.OperationalError):
        commits.add(_instance("9.9"))
    monkeypatch.undo()
    assert commits.add(_instance("9.9")) == (True, False)  # not stuck after a failed batch


def test_config_round_trip(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.set_config(models=["cnn"], forwards=["PACS@h:104"])
    assert queue.config()["models"] == ["cnn"]


def test_pipeline_flow_jobs_and_forwards(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.add_instance(_instance("1.1"))
    assert queue.claim_series() == []  # still receiving
    queue.complete(["1.2.3"])
    assert queue.claim_series() == ["1.2.3"]
    assert len(queue.add_jobs("1.2.3", ["cnn", "unet"])) == 2
    assert queue.add_jobs("1.2.3", ["cnn"]) == []  # one open job per model
    assert queue.claim_series() == []
    job = queue.next_job()
    assert (job["model"], job["state"], job["attempts"]) == ("cnn", "running", 1)
    assert queue.series_paths("1.2.3") == ["/x/1.1"]
    queue.finish_job(job["id"], "done", outputs=["/r/sr.dcm"])
    assert queue.series_summary()[0]["state"] == "running"
    queue.finish_job(queue.next_job()["id"], "failed", error="boom")
    assert queue.series_summary()[0]["state"] == "failed"
    queue.add_forwards(job["id"], ["PACS@h:104"], ["/r/sr.dcm"])
    queue.add_forwards(job["id"], ["PACS@h:104"], ["/r/sr.dcm"])
    [forward] = queue.due_forwards(time.time())
    assert queue.due_forwards(time.time()) == []  # claimed
    queue.finish_forward(forward["id"], "pending", error="refused", retry_at=time.time() + 60)
    assert queue.due_forwards(time.time()) == []
    assert len(queue.due_forwards(time.time() + 61)) == 1


def test_claim_after_crash_between_claim_and_jobs(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.add_instance(_instance("1.1", expected=1))
    assert queue.claim_series() == ["1.2.3"]
    assert queue.claim_series() == ["1.2.3"]  # pending without jobs: claimed again
    queue.add_jobs("1.2.3", [])
    assert queue.series_summary()[0]["state"] == "done"


class _Clock:
    """Stands in for the queue modules' `time`: a clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_restart_restarts_the_quiet_timer(tmp_path, monkeypatch):
    clock = _Clock(1000.0)
    for module in (instances, jobs):
        monkeypatch.setattr(module, "time", clock)
    path = tmp_path / "q.sqlite"
    Queue(path).add_instance(_instance("1.1"))
    clock.now += 600  # down for ten minutes: far longer than the series timeout
    queue = Queue(path)
    queue.recover()
    assert queue.quiet_series(10) == []  # the sender gets the full timeout to resend
    clock.now += 5
    queue.add_instance(_instance("1.2", series="1.2.4"))
    clock.now += 5
    assert queue.quiet_series(10) == ["1.2.3"]  # ten seconds after the restart
    clock.now += 5
    assert queue.quiet_series(10) == ["1.2.3", "1.2.4"]


def _finish_first_result(queue: Queue, outputs: list[str]) -> dict:
    queue.complete(["1.2.3"])
    queue.claim_series()
    queue.add_jobs("1.2.3", ["cnn"])
    job = queue.next_job()
    queue.finish_job(job["id"], "done", outputs=outputs)
    return job


def test_a_late_instance_makes_a_revision_that_supersedes_the_done_job(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.add_instance(_instance("1.1"))
    first = _finish_first_result(queue, ["/r/first.dcm"])
    assert first["supersedes"] is None and queue.superseded_outputs(first) == []
    assert queue.add_instance(_instance("1.1")) == (False, False)  # a resend of the same instance
    assert queue.series_summary()[0]["state"] == "done"
    queue.add_instance(_instance("1.2"))  # a late slice
    queue.add_instance(_instance("1.3"))
    [series] = queue.series_summary()
    assert (series["state"], series["revision"]) == ("received", 1)
    queue.complete(["1.2.3"])
    queue.claim_series()
    queue.add_jobs("1.2.3", ["cnn"])
    second = queue.next_job()
    assert second["supersedes"] == first["id"]
    assert queue.superseded_outputs(second) == ["/r/first.dcm"]
    queue.finish_job(second["id"], "done", outputs=["/r/second.dcm"])
    [series] = queue.series_summary()
    assert (series["state"], series["revision"]) == ("revised", 1)


def test_new_data_for_a_series_without_results_is_no_revision(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.add_instance(_instance("1.1"))
    queue.complete(["1.2.3"])
    queue.claim_series()
    queue.add_jobs("1.2.3", ["cnn"])
    queue.finish_job(queue.next_job()["id"], "failed", error="boom")
    queue.add_instance(_instance("1.2"))
    [series] = queue.series_summary()
    assert (series["state"], series["revision"]) == ("received", 0)
    queue.complete(["1.2.3"])
    queue.claim_series()
    queue.add_jobs("1.2.3", ["cnn"])
    assert queue.next_job()["supersedes"] is None


def test_a_spool_from_before_revisions_gets_the_new_columns(tmp_path):
    path = tmp_path / "q.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.executescript(database._SCHEMA)
        db.execute("INSERT INTO series (uid, last_received, updated) VALUES ('1.2.3', 0, 0)")
    db.close()
    queue = Queue(path)
    assert queue.series_summary()[0]["revision"] == 0
    queue.add_instance(_instance("1.1"))
    _finish_first_result(queue, ["/r/first.dcm"])
    assert queue.series_summary()[0]["state"] == "done"


def test_edgeimg_queue_shows_a_revised_series(tmp_path):
    queue = Queue(tmp_path / QUEUE_NAME)
    queue.add_instance(_instance("1.1"))
    _finish_first_result(queue, ["/r/first.dcm"])
    queue.add_instance(_instance("1.2"))
    _finish_first_result(queue, ["/r/second.dcm"])
    shown = CliRunner().invoke(cli, ["queue", "--spool", str(tmp_path)], terminal_width=200)
    assert shown.exit_code == 0 and "revised" in shown.output
    listed = CliRunner().invoke(cli, ["queue", "--spool", str(tmp_path), "--json"])
    [series] = json.loads(listed.output)["series"]
    assert (series["state"], series["revision"], series["jobs"]) == ("revised", 1, {"done": 2})


def test_an_instance_that_arrives_while_the_job_runs_reopens_the_series(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.add_instance(_instance("1.1"))
    queue.complete(["1.2.3"])
    queue.claim_series()
    queue.add_jobs("1.2.3", ["cnn", "unet"])
    cnn = queue.next_job()
    queue.finish_job(cnn["id"], "done", outputs=["/r/cnn.dcm"], inputs=1)
    unet = queue.next_job()
    queue.add_instance(_instance("1.2"))  # while unet runs on the one it read
    assert queue.series_summary()[0]["state"] == "running"
    queue.finish_job(unet["id"], "done", outputs=["/r/unet.dcm"], inputs=1)
    [series] = queue.series_summary()
    assert (series["state"], series["revision"]) == ("received", 1)
    queue.complete(["1.2.3"])
    queue.claim_series()
    queue.add_jobs("1.2.3", ["cnn", "unet"])
    for job in (queue.next_job(), queue.next_job()):
        assert queue.superseded_outputs(job) == [f"/r/{job['model']}.dcm"]
        queue.finish_job(job["id"], "done", outputs=["/r/new.dcm"], inputs=2)
    [series] = queue.series_summary()
    assert (series["state"], series["revision"]) == ("revised", 1)  # no reopening again


def test_a_deferred_job_waits_pending_until_its_next_try(tmp_path):
    queue = Queue(tmp_path / "q.sqlite")
    queue.add_instance(_instance("1.1", expected=1))
    assert queue.claim_series() == ["1.2.3"]
    queue.add_jobs("1.2.3", ["cnn"])
    job = queue.next_job()
    queue.defer_job(job["id"], "triton at grpc://10.0.0.9:8001: unreachable", time.time() + 60)
    assert queue.next_job() is None  # not before its next try
    assert queue.totals()["jobs"] == {"pending": 1} and queue.totals()["series"] == {"pending": 1}
    assert queue.claim_series() == []  # the series keeps its one job
    (waiting,) = queue.waiting()
    assert waiting["model"] == "cnn" and "10.0.0.9:8001" in waiting["reason"]
    queue.defer_job(job["id"], "still down", time.time() - 1)
    again = queue.next_job()
    assert again["id"] == job["id"] and again["attempts"] == 2
    queue.finish_job(job["id"], "done", outputs=["/r/sr.dcm"], inputs=1)
    assert queue.waiting() == [] and queue.totals()["series"] == {"done": 1}
