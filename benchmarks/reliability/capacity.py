"""The disk_full and load parts: what serve answers when it must refuse (no space, no free
association slot) and how fast it stores when it need not.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from benchmarks.reliability.common import (
    CONTEXTS,
    HANG,
    Server,
    ms_percentiles,
    payload,
    run_senders,
    stored_instances,
)
from testsupport.rawdicom import Association, Store, associate_rq, exchange


def disk_full(workdir: Path, count: int) -> dict:
    root = workdir / "disk"
    root.mkdir()
    free_mb = shutil.disk_usage(root).free / 2**20
    server = Server(root, "--min-free-mb", f"{free_mb + 64:.0f}")
    server.start()
    statuses = _statuses(server.port, count)
    files = [p for p in (server.spool / "series").rglob("*") if p.is_file()]
    rows = len(stored_instances(server.spool))
    alive = server.alive()
    server.stop()
    server.args = ("--min-free-mb", "0")
    server.start()
    resumed, _ = run_senders(server.port, [list(range(count))], "disk")
    stored = len(stored_instances(server.spool))
    server.stop()
    return {
        "watermark_mb_above_free": 64,
        "instances": count,
        "statuses_when_full": statuses,
        "acknowledged_when_full": statuses.get("0x0000", 0),
        "files_written_when_full": len(files),
        "rows_written_when_full": rows,
        "process_alive": alive,
        "stored_after_space_returns": stored,
        "acknowledged_after_space_returns": len(resumed["acked"]),
    }


def _statuses(port: int, count: int) -> dict[str, int]:
    """The status each instance gets, counted (one association, sent from here)."""
    counts: dict[str, int] = {}
    with Association(port, CONTEXTS, timeout=HANG) as assoc:
        for index in range(count):
            uid, data = payload(index, "disk")
            key = f"0x{assoc.store(Store(CTImageStorage, uid, data)):04X}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def load(workdir: Path, levels: tuple[int, ...], per_sender: int) -> dict:
    limit = max(levels)
    server = Server(workdir / "load", "--min-free-mb", "0", "--max-associations", str(limit))
    server.workdir.mkdir()
    server.start()
    report: dict[str, Any] = {"levels": {}}
    offset = 0
    for level in levels:
        shares = [
            list(range(offset + k * per_sender, offset + (k + 1) * per_sender))
            for k in range(level)
        ]
        offset += level * per_sender
        result, seconds = run_senders(server.port, shares, "load")
        report["levels"][str(level)] = {
            "associations": level,
            "instances": level * per_sender,
            "acknowledged": len(result["acked"]),
            "instances_per_s": round(len(result["acked"]) / seconds, 1),
            **ms_percentiles(result["rtts"]),
        }
    report["limit"] = _limit_answers(server.port, limit)
    report["peak_rss_mb"] = server.peak_rss_mb()
    server.stop()
    return report


def _limit_answers(port: int, limit: int) -> dict:
    """Fill every slot, ask for one more, free a slot, ask again."""
    held = [Association(port, CONTEXTS, timeout=HANG) for _ in range(limit)]
    try:
        over = exchange(port, [associate_rq(CONTEXTS_RQ)], timeout=HANG)
        held.pop().close()
        time.sleep(0.2)
        with Association(port, CONTEXTS, timeout=HANG) as again:
            after = "accepted" if again.ids else "no context"
    finally:
        for assoc in held:
            assoc.close()
    return {"max_associations": limit, "one_more": over, "after_a_slot_frees": after}


CONTEXTS_RQ = [(CTImageStorage, (ExplicitVRLittleEndian,))]
