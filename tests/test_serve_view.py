"""The live status view of `edgeimg serve`, rendered the way rich's own tests render."""

from __future__ import annotations

import io
import re
import time

from pynetdicom import AE
from rich.console import Console

from edgeimg.sdk.metrics import percentile
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.eventlog import log
from edgeimg.serve.listener import Listener
from edgeimg.serve.queue import Instance, Queue
from edgeimg.serve.view import LogTail, StatusView, established

CT = "1.2.840.10008.5.1.4.1.1.2"


def _text(view: StatusView) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    console.print(view.render())
    return console.file.getvalue().replace("│", " ")  # rows run on across the panel's edges


def _instance(sop: str, series: str) -> Instance:
    return Instance(sop, series, "1.2", CT, "CT", f"/x/{sop}", 10, "ab", "SCANNER", "127.0.0.1")


def test_counts_latency_and_log_tail(tmp_path, monkeypatch) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    for index in range(5):
        queue.add_instance(_instance(f"1.1.{index}", "9.1"))
    queue.add_instance(_instance("1.2.1", "9.2"))
    queue.add_instance(_instance("1.3.1", "9.3"))
    queue.complete(["9.1", "9.2"])
    queue.claim_series()
    queue.add_jobs("9.1", ["cnn", "unet"])
    job = queue.next_job()
    queue.finish_job(job["id"], "done", outputs=["/r/a.dcm"])
    queue.add_forwards(job["id"], ["pacs", "research"], ["/r/a.dcm"])
    queue.add_jobs("9.2", [])  # routed to no model: done
    tail = LogTail(lines=2)
    monkeypatch.setattr("sys.stderr", tail)
    for event in ("stored", "series_complete", "job_done"):
        log(event, series_uid="9.1")
    view = StatusView(
        queue,
        title="edgeimg serve EDGE@127.0.0.1:11112",
        associations=lambda: 3,
        latency=lambda: {"cnn": {"jobs": 4, "p50": 1.25, "p95": 2.5}},
        tail=tail,
    )
    text = _text(view)
    assert "edgeimg serve EDGE@127.0.0.1:11112" in text
    assert re.search(r"associations\s+3\s+instances\s+7 received", text)
    assert re.search(r"series\s+received 1\s+queued 0\s+running 1\s+done 1\s+failed 0", text)
    assert re.search(r"jobs\s+.*done 1", text) and re.search(r"jobs\s+.*pending 1", text)
    assert re.search(r"forwards\s+pending 2", text)
    assert re.search(r"cnn\s+4\s+1\.25\s+2\.50", text)
    # Only the last two lines, in the readable form log() uses on a terminal.
    assert "series_complete series_uid=9.1" in text and "job_done series_uid=9.1" in text
    assert "stored" not in text


def test_empty_queue_renders(tmp_path) -> None:
    text = _text(StatusView(Queue(tmp_path / "q.sqlite")))
    assert re.search(r"associations\s+0\s+instances\s+0 received", text)
    assert re.search(r"jobs\s+none yet", text)


def test_associations_of_a_real_listener(tmp_path) -> None:
    config = ServeConfig(
        aet="EDGE",
        port=0,
        host="127.0.0.1",
        spool=tmp_path / "spool",
        min_free_mb=0,
        acse_timeout=2,
        network_timeout=5,
    )
    listener = Listener(config)
    _, port = listener.start()
    view = StatusView(listener.queue, associations=established(listener))
    try:
        scu = AE(ae_title="SCANNER")
        scu.add_requested_context("1.2.840.10008.1.1")
        assoc = scu.associate("127.0.0.1", port, ae_title="EDGE")
        assert assoc.is_established
        deadline = time.monotonic() + 5
        while view.snapshot()["associations"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.search(r"associations\s+1\s", _text(view))
        assoc.release()
        while view.snapshot()["associations"] != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.search(r"associations\s+0\s", _text(view))
    finally:
        listener.stop(drain_timeout=2)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
    assert percentile([0.5], 95) == 0.5
