"""The slow_restart part: down for longer than the series timeout, then late slices; each
series must make one result, and each late slice one revision naming it.
"""

from __future__ import annotations

import sqlite3
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
    run_senders,
    stored_instances,
)
from edgeimg.serve.spool import QUEUE_NAME
from testsupport.pacs import Orthanc
from testsupport.peers import dataset_bytes

SLOW_RESTART_SERIES = {"test": 2, "bench": 5, "soak": 10}
SLOW_QUIET = 3.0  # serve --series-timeout here; the server stays down for twice as long
FIRST_PART = 10  # slices of each series sent before the kill; the last one comes late


def slow_restart(workdir: Path, series: int) -> dict:
    """Kill -9 with part of each series stored, stay down past the series timeout, restart and
    send the rest (but the last slice) within the timeout: each series must make one result.
    Then each series' last slice comes late: each must make one revision naming the result it
    replaces."""
    count = series * SERIES_SIZE
    with Orthanc() as pacs:
        server = Server(
            workdir / "slow-restart",
            "--min-free-mb",
            "0",
            "--model",
            MODEL,
            "--forward",
            pacs.address,
            "--series-timeout",
            str(SLOW_QUIET),
        )
        server.workdir.mkdir()
        build_engine_up_front(server.workdir / "engines")
        server.start()
        acked = _send_part(server, _slices(count, 0, FIRST_PART))
        server.kill()
        open_at_kill = _series_states(server.spool).get("received", 0)
        time.sleep(2 * SLOW_QUIET)
        server.start()
        time.sleep(SLOW_QUIET / 2)  # the scanner retries a little later, within the timeout
        acked |= _send_part(server, _slices(count, FIRST_PART, SERIES_SIZE - 1))
        drained = drain(server.spool)
        after_restart = _revisions_at(pacs)
        acked |= _send_part(server, _slices(count, SERIES_SIZE - 1, SERIES_SIZE))
        drained_late = drain(server.spool)
        after_late = _revisions_at(pacs)
        states = _series_states(server.spool)
        stored = stored_instances(server.spool)
        server.stop()
    lost = sum(
        uid not in stored or dataset_bytes(stored[uid]) != data
        for uid, data in (payload(index, "slow") for index in range(count))
        if uid in acked
    )
    return {
        "series": series,
        "series_timeout_s": SLOW_QUIET,
        "down_s": 2 * SLOW_QUIET,
        "series_open_at_kill": open_at_kill,
        "acknowledged": len(acked),
        "lost": lost,
        "drained_s": [drained, drained_late],
        "after_slow_restart": after_restart,
        "after_late_slices": after_late,
        "queue_series_revised": states.get("revised", 0),
    }


def _slices(count: int, low: int, high: int) -> list[int]:
    """Indices of slices low..high-1 of every series."""
    return [index for index in range(count) if low <= index % SERIES_SIZE < high]


def _send_part(server: Server, indices: list[int]) -> set[str]:
    result, _ = run_senders(server.port, [indices[k::4] for k in range(4)], "slow")
    return set(result["acked"])


def _series_states(spool: Path) -> dict[str, int]:
    """Series by the state `edgeimg queue` shows (done with a revision: `revised`)."""
    with sqlite3.connect(spool / QUEUE_NAME) as db:
        rows = db.execute(
            "SELECT CASE WHEN state = 'done' AND revision > 0 THEN 'revised'"
            " ELSE state END, COUNT(*) FROM series GROUP BY 1"
        )
        return dict(rows.fetchall())


def _revisions_at(pacs: Orthanc) -> dict[str, Any]:
    """SRs at the PACS per source series: current (named by no other SR as its predecessor),
    revisions (naming a predecessor) and duplicates (the same sources twice), counted apart."""
    reports = []
    for ident in pacs.find(modality="SR"):
        tags = pacs.instance_tags(ident)
        [study] = tags["CurrentRequestedProcedureEvidenceSequence"]
        [source] = study["ReferencedSeriesSequence"]
        sources = frozenset(r["ReferencedSOPInstanceUID"] for r in source["ReferencedSOPSequence"])
        names = {
            item["ReferencedSOPInstanceUID"]
            for pre in tags.get("PredecessorDocumentsSequence", [])
            for series in pre["ReferencedSeriesSequence"]
            for item in series["ReferencedSOPSequence"]
        }
        reports.append((source["SeriesInstanceUID"], tags["SOPInstanceUID"], sources, names))
    named = {uid for *_, names in reports for uid in names}
    per_series: dict[str, list[tuple]] = {}
    for report in reports:
        per_series.setdefault(report[0], []).append(report)
    current = [sum(uid not in named for _, uid, _, _ in found) for found in per_series.values()]
    return {
        "results_at_pacs": len(reports),
        "series_with_results": len(per_series),
        "current_results_per_series": sorted(set(current)),
        "revisions": sum(bool(names) for *_, names in reports),
        "duplicates": sum(len(found) - len({r[2] for r in found}) for found in per_series.values()),
    }
