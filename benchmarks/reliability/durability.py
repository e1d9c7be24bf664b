"""The crash part: SIGKILL during sends, then during jobs and forwards; nothing acknowledged
may be lost, no temp file may survive, every series gets one result at the PACS.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.reliability.common import (
    MODEL,
    SERIES_SIZE,
    Server,
    build_engine_up_front,
    drain,
    payload,
    round_robin,
    run_senders,
    stored_instances,
    temp_files,
)
from edgeimg.serve.spool import QUEUE_NAME
from testsupport.pacs import Orthanc
from testsupport.peers import dataset_bytes

SERIES_QUIET = 1.0  # serve --series-timeout in the crash part: series complete while kills go on


def crash(workdir: Path, instances: int, senders: int, kills: int, seed: int = 7) -> dict:
    with Orthanc() as pacs:
        server = Server(
            workdir / "crash",
            "--min-free-mb",
            "0",
            "--max-associations",
            "32",
            "--model",
            MODEL,
            "--forward",
            pacs.address,
            "--series-timeout",
            str(SERIES_QUIET),
        )
        server.workdir.mkdir()
        build_engine_up_front(server.workdir / "engines")
        report = _crash(server, instances, senders, kills, seed)
        in_jobs = _kill_in_jobs(server, max(1, kills // 2), random.Random(seed + 1))
        report["results"] = {"drained": drain(server.spool), **_results_at(pacs)}
        report["results"]["series"] = -(-instances // SERIES_SIZE)
        report["results"]["kills_with_a_job_running"] = in_jobs
        report["results"]["jobs_and_forwards_requeued_by_kills"] = _requeued(server.workdir)
        server.stop()
    return report


def _crash(server: Server, instances: int, senders: int, kills: int, seed: int) -> dict:
    server.start()
    rng = random.Random(seed)
    points = sorted(rng.sample(range(instances // 20, instances * 19 // 20), kills))
    temp_left: list[int] = []

    def killer(progress: Any) -> None:
        for point in points:
            while progress.value < point:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))  # somewhere inside the next instances
            server.kill()
            temp_left.append(temp_files(server.spool))
            server.start()

    first, _ = run_senders(server.port, round_robin(instances, senders), "crash", killer)
    stored = stored_instances(server.spool)
    acked = set(first["acked"])
    unacked_stored = set(first["unanswered"]) & set(stored)
    identical = lost = 0
    for index in range(instances):
        uid, data = payload(index, "crash")
        path = stored.get(uid)
        same = path is not None and path.is_file() and dataset_bytes(path) == data
        identical += same
        lost += uid in acked and not same
    orphans_after_recovery = temp_files(server.spool)
    # the scanner's retry: everything not acknowledged is sent again; duplicates are stored once
    retry = [i for i in range(instances) if payload(i, "crash")[0] not in acked]
    second, _ = run_senders(server.port, [retry[k::senders] for k in range(senders)], "crash")
    stored_after = stored_instances(server.spool)
    files = [p for p in (server.spool / "series").rglob("*.dcm")]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return {
        "instances": instances,
        "senders": senders,
        "kills": len(temp_left),
        "acknowledged": len(acked),
        "unanswered_when_killed": len(first["unanswered"]),
        "stored_and_hash_identical": identical,
        "lost": lost,
        "stored_but_unacknowledged": len(unacked_stored),
        "temp_files_left_by_kills": sum(temp_left),
        "orphan_temp_files": orphans_after_recovery,
        "restart_to_listening_s": {
            "median": round(statistics.median(server.restarts[1:]), 3) if kills else None,
            "max": round(max(server.restarts[1:]), 3) if kills else None,
        },
        "after_retry": {
            "acknowledged": len(acked) + len(second["acked"]),
            "stored_rows": len(stored_after),
            "files": len(files),
            "distinct_files": len(digests),
        },
    }


def _kill_in_jobs(server: Server, kills: int, rng: random.Random, wait: float = 20.0) -> int:
    """After the sends: SIGKILL the server while a job runs (a model on a series, its results
    being written or forwarded), `kills` times; returns how many found a job running."""
    hits = 0
    for _ in range(kills):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not _running_jobs(server.spool):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.2))
        hits += _running_jobs(server.spool) > 0
        server.kill()
        server.start()
    return hits


def _running_jobs(spool: Path) -> int:
    with sqlite3.connect(spool / QUEUE_NAME) as db:
        return db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]


def _requeued(workdir: Path) -> int:
    """Jobs and forwards a kill caught running, as each restart's `recovered` log line says."""
    events = (
        json.loads(line)
        for line in (workdir / "serve.log").read_text().splitlines()
        if line.startswith("{")
    )
    return sum(event.get("requeued", 0) for event in events if event.get("event") == "recovered")


def _results_at(pacs: Orthanc) -> dict[str, int]:
    """The SRs at the PACS by the source instances they report on: the same sources twice (under
    different UIDs; Orthanc keeps one copy per UID) is a duplicate result. A series with results
    on different sources was processed before all of it had arrived, then again."""
    sources_per_series: dict[str, list[frozenset[str]]] = {}
    for ident in pacs.instances():
        tags = pacs.instance_tags(ident)
        if tags.get("Modality") != "SR":
            continue
        for study in tags.get("CurrentRequestedProcedureEvidenceSequence", []):
            for series in study.get("ReferencedSeriesSequence", []):
                refs = frozenset(
                    r["ReferencedSOPInstanceUID"] for r in series.get("ReferencedSOPSequence", [])
                )
                sources_per_series.setdefault(series["SeriesInstanceUID"], []).append(refs)
    results = [refs for found in sources_per_series.values() for refs in found]
    return {
        "results_at_pacs": len(results),
        "series_with_results": len(sources_per_series),
        "duplicate_results_at_pacs": len(results) - len(set(results)),
        "series_also_processed_incomplete": sum(
            len(set(found)) > 1 for found in sources_per_series.values()
        ),
    }
