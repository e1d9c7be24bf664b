"""The flood part: connections that never associate (idle raw sockets, slow-loris peers, a
reconnect storm) must not keep a real peer's association out or lose what it stores.
"""

from __future__ import annotations

import json
import multiprocessing
import selectors
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage

from benchmarks.reliability.common import (
    CONTEXTS,
    HANG,
    Server,
    ms_percentiles,
    payload,
    stored_instances,
)
from testsupport.rawdicom import Association, Closed, Store, associate_rq

#: per scale: idle raw connections one host holds, the connections a storm tries to hold (past
#: the bound: each one opened closes the oldest), slow-loris peers, timed associations, and the
#: seconds each phase lasts at least (past the ARTIM time, so that its closes are in the run)
FLOOD = {
    "test": dict(idle=60, storm=150, loris=8, associations=20, seconds=6),
    "bench": dict(idle=60, storm=150, loris=16, associations=100, seconds=12),
    "soak": dict(idle=100, storm=300, loris=32, associations=300, seconds=30),
}
FLOOD_PER_HOST = 100  # serve --max-pending-per-host in this part: the idle ones fit, a storm not
LORIS_BYTE_EVERY = 0.2  # seconds between the bytes of a slow-loris peer's A-ASSOCIATE-RQ


def _hold_idle(kind: str, port: int, count: int, done: Any, out: Any) -> None:
    """Keep `count` raw connections open from this host, reopening each one the server closes."""
    selector, opened, closed = selectors.DefaultSelector(), 0, 0
    while not done.is_set():
        while len(selector.get_map()) < count:
            sock = socket.create_connection(("127.0.0.1", port), timeout=HANG)
            selector.register(sock, selectors.EVENT_READ)
            opened += 1
        for key, _ in selector.select(timeout=0.1):
            try:
                data = key.fileobj.recv(64)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                closed += 1
    out.put((kind, opened, closed))


def _loris(kind: str, port: int, count: int, done: Any, out: Any) -> None:
    """`count` peers trickling an A-ASSOCIATE-RQ a byte at a time, reconnecting when closed."""
    request, opened, closed = associate_rq(), 0, 0
    peers: dict[socket.socket, int] = {}
    while not done.is_set():
        while len(peers) < count:
            peers[socket.create_connection(("127.0.0.1", port), timeout=HANG)] = 0
            opened += 1
        for sock, sent in list(peers.items()):
            try:
                sock.sendall(request[sent : sent + 1])
                peers[sock] = min(sent + 1, len(request) - 1)  # never the last byte
            except OSError:
                sock.close()
                del peers[sock]
                closed += 1
        done.wait(LORIS_BYTE_EVERY)
    out.put((kind, opened, closed))


FLOOD_ATTACKERS = {"idle": _hold_idle, "storm": _hold_idle, "loris": _loris}


def _timed_associations(port: int, count: int, tag: str, seconds: float) -> dict:
    """`count` associations, one at a time and spread over `seconds`, each timed from connect
    to A-ASSOCIATE-AC and storing one instance; the SOP UIDs acknowledged."""
    warnings.simplefilter("ignore")
    times, acked, failed = [], [], 0
    began = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, began + index * seconds / count - time.monotonic()))
        uid, data = payload(index, tag)
        started = time.monotonic()
        try:
            with Association(port, CONTEXTS, timeout=HANG) as assoc:
                times.append(time.monotonic() - started)
                if assoc.store(Store(CTImageStorage, uid, data)) == 0:
                    acked.append(uid)
        except (OSError, Closed):
            failed += 1
    return {"times": times, "acked": acked, "failed": failed}


def flood(workdir: Path, scale: str) -> dict:
    """A real peer's association time alone, beside idle raw connections from its own host
    (more than `--max-pending-per-host`), and beside slow-loris peers; nothing acknowledged
    may be lost. The server runs with its default ARTIM and pending bounds."""
    settings = FLOOD[scale]
    server = Server(
        workdir / "flood", "--min-free-mb", "0", "--max-pending-per-host", str(FLOOD_PER_HOST)
    )
    server.workdir.mkdir()
    server.start()
    context = multiprocessing.get_context("fork")
    report: dict[str, Any] = {"settings": settings, "max_pending_per_host": FLOOD_PER_HOST}
    acked: list[str] = []
    phases = {
        "alone": (),
        "idle": ("idle",),
        "loris": ("loris",),
        "both": ("idle", "loris"),
        "storm": ("storm",),
    }
    for phase, kinds in phases.items():
        out, done = context.Queue(), context.Event()
        processes = [
            context.Process(
                target=FLOOD_ATTACKERS[kind], args=(kind, server.port, settings[kind], done, out)
            )
            for kind in kinds
        ]
        for process in processes:
            process.start()
        time.sleep(1.0 if processes else 0)  # attackers in place first
        timed = _timed_associations(
            server.port, settings["associations"], f"flood {phase}", settings["seconds"]
        )
        done.set()
        counts = {
            kind: {"opened": opened, "closed_by_server": closed}
            for kind, opened, closed in (out.get(timeout=HANG) for _ in processes)
        }
        for process in processes:
            process.join(10)
        acked += timed["acked"]
        report[phase] = {
            "association": ms_percentiles(timed["times"]),
            "association_max_ms": round(1000 * max(timed["times"]), 2) if timed["times"] else None,
            "associations_failed": timed["failed"],
            "stored": len(timed["acked"]),
            "attack": counts,
        }
    report["server_alive"] = server.alive()
    report["server_peak_rss_mb"] = server.peak_rss_mb()
    server.stop()
    stored = stored_instances(server.spool)
    report["acknowledged"], report["lost"] = len(acked), sum(uid not in stored for uid in acked)
    drops = [
        json.loads(line)
        for line in (server.workdir / "serve.log").read_text().splitlines()
        if '"connection_dropped"' in line
    ]
    # from its log lines: drops held back after the last line of a host and reason are not in it
    report["server_closed_logged"] = {
        reason: sum(d.get("count", 1) for d in drops if d["reason"] == reason)
        for reason in sorted({d["reason"] for d in drops})
    }
    return report
