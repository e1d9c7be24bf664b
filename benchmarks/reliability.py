"""Faults, load and attack against a running `edgeimg serve`, driven from separate processes.

Its parts, each against its own `edgeimg serve` subprocess on loopback, with 64x64 CT images:

* crash: senders (one process each) C-STORE N instances (series of 20) while the server is
  SIGKILLed at random points of the run and restarted; senders reconnect and go on; then it is
  killed again while jobs run (half as many times). Then they
  resend what was never acknowledged (a scanner's retry). Every acknowledged instance must be
  stored, byte-identical to what was sent (lost = 0); no temp file may survive recovery
  (orphans = 0). The server runs `cnn` on each series as it goes quiet and forwards the SR to a
  private Orthanc, so kills also land in jobs and forwards: after the queue drains, every series
  must have its SR at the PACS and no result may be there twice (two SRs on the same sources).
* disk: `--min-free-mb` above the free space: every instance gets A700, nothing is written, the
  process stays up; restarted with a lower watermark it stores them all.
* load: instances/s and C-STORE round-trip percentiles at 1, 4 and 16 concurrent associations,
  the server's peak RSS, and the answer to one association past `--max-associations`
  (must be the transient rejection 2/3/2, and go away when a slot frees).
* flood: a real peer's association time alone, beside 60+ idle raw connections from its own
  host and beside slow-loris peers trickling an A-ASSOCIATE-RQ byte by byte (default ARTIM and
  pending bounds); every association accepted, each instance it stores kept (lost = 0).
* attack: a legitimate sender with and without attackers running (idle TCP connections, peers
  stalling inside a PDU, a PDU declaring 4 GiB, an HTTP request; on a TLS port, peers that
  never send a ClientHello): success rate (must be 100%), added latency, memory ceiling, hangs.
  The attackers hold at most 6 of the default 8 association slots at once: more than that is
  denial of service by volume, which the limit answers with the transient 2/3/2 for everyone
  (docs/threat-model.md leaves it to the network).
* slow restart: SIGKILL with half of each series stored, down for twice `--series-timeout`,
  restarted, the rest sent within the timeout: one result per series; then each series' last
  slice comes late: one revision each (its SR names the one it replaces), one current result
  per series, 0 duplicates.

* phi_canary (bench and soak): studies whose identifying attributes carry marker strings go
  through storescu, TLS, Orthanc, every model, `run`, `deid` and the error paths; every byte
  edgeimg wrote outside the DICOM objects is searched for the markers (must be 0 hits).

`python -m benchmarks.reliability [--scale test|bench|soak]`; `make soak` runs the soak scale,
`make bench` the bench scale, tests/test_reliability.py the test scale (under a minute and a half).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import selectors
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from edgeimg.sdk.metrics import percentile
from edgeimg.serve.spool import QUEUE_NAME, TEMP_PREFIX
from testsupport.canary import ALL_MODELS, QUICK_MODELS
from testsupport.canary import exercise as canary_exercise
from testsupport.corpus import (
    AET,
    Association,
    Closed,
    Store,
    associate_rq,
    encoded,
    exchange,
    instance,
    uid,
)
from testsupport.pacs import Orthanc
from testsupport.peers import dataset_bytes, free_port, self_signed, start_serve, stop

SCALES: dict[str, dict[str, Any]] = {
    "test": dict(
        instances=100,
        senders=8,
        kills=2,
        disk=10,
        load=(1, 4, 16),
        per_sender=12,
        legit=30,
        idle=2,
        stalls=2,
    ),
    "bench": dict(
        instances=600,
        senders=8,
        kills=5,
        disk=20,
        load=(1, 4, 16),
        per_sender=40,
        legit=100,
        idle=2,
        stalls=2,
    ),
    "soak": dict(
        instances=2000,
        senders=8,
        kills=10,
        disk=50,
        load=(1, 4, 16),
        per_sender=150,
        legit=300,
        idle=2,
        stalls=2,
    ),
}
SIZE = 64
SERIES_SIZE = 20
MODEL = "cnn"
SERIES_QUIET = 1.0  # serve --series-timeout in the crash part: series complete while kills go on
DRAIN_TIMEOUT = 300.0
TIMEOUT = 5  # serve --timeout: idle and stalled peers lose their slot after this
HANG = 30.0  # an operation still unanswered after this long is a hang
CONTEXTS = [(CTImageStorage, ExplicitVRLittleEndian)]


def payload(index: int, tag: str) -> tuple[str, bytes]:
    """(SOP Instance UID, data set bytes) of instance `index`: the same bytes on every call.

    Instances come in series of SERIES_SIZE, one study per part, as a scanner sends them."""
    slice_index = index % SERIES_SIZE
    ds = instance(
        f"reliability {tag} {index}",
        size=SIZE,
        SeriesInstanceUID=uid(f"reliability {tag} series {index // SERIES_SIZE}"),
        StudyInstanceUID=uid(f"reliability {tag} study"),
        InstanceNumber=slice_index + 1,
        PixelSpacing=[0.7, 0.7],
        SliceThickness=2.5,
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        ImagePositionPatient=[-22.4, -22.4, 2.5 * slice_index],
    )
    return str(ds.SOPInstanceUID), encoded(ds)


class Server:
    """One `edgeimg serve` process in `workdir`, restartable after a kill."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.workdir, self.args, self.port = workdir, args, free_port()
        self.process: subprocess.Popen | None = None
        self.restarts: list[float] = []

    def start(self) -> float:
        """Start and wait until it accepts; returns seconds from exec to listening."""
        started = time.monotonic()
        self.process = start_serve(
            "--aet",
            AET,
            "--host",
            "127.0.0.1",
            "--spool",
            "spool",
            "--timeout",
            str(TIMEOUT),
            *self.args,
            port=self.port,
            cwd=self.workdir,
        )
        elapsed = time.monotonic() - started
        self.restarts.append(elapsed)
        return elapsed

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def peak_rss_mb(self) -> float | None:
        """VmHWM of the process (its peak resident set so far), from /proc."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()  # type: ignore[union-attr]
        except OSError:
            return None
        line = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        return round(int(line.split()[1]) / 1024, 1)

    def stop(self) -> int | None:
        return stop(self.process) if self.process is not None else None

    @property
    def spool(self) -> Path:
        return self.workdir / "spool"


def _stored(spool: Path) -> dict[str, Path]:
    with sqlite3.connect(spool / QUEUE_NAME) as db:
        return {uid: Path(path) for uid, path in db.execute("SELECT sop_uid, path FROM instances")}


def _temp_files(spool: Path) -> int:
    return sum(1 for _ in spool.rglob(f"{TEMP_PREFIX}*"))


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {f"p{q}_ms": round(1000 * percentile(values, q), 2) for q in (50, 95, 99)}


# --- senders (each runs in its own process) ----------------------------------------------------


def _send_all(
    port: int,
    indices: list[int],
    tag: str,
    progress: Any,
    deadline: float,
) -> dict[str, Any]:
    """C-STORE each instance once, reconnecting after the server dies; acked and unanswered."""
    warnings.simplefilter("ignore")
    acked, unanswered, rtts = [], [], []
    pending = list(indices)
    assoc: Association | None = None
    while pending and time.monotonic() < deadline:
        if assoc is None:
            try:
                assoc = Association(port, CONTEXTS, timeout=HANG)
            except (OSError, Closed, ConnectionError):
                time.sleep(0.05)
                continue
        index = pending[0]
        uid, data = payload(index, tag)
        started = time.monotonic()
        try:
            status = assoc.store(Store(CTImageStorage, uid, data))
        except (OSError, Closed, ConnectionError):
            unanswered.append(uid)  # the server went away with this one in flight
            pending.pop(0)
            assoc.sock.close()
            assoc = None
            continue
        rtts.append(time.monotonic() - started)
        pending.pop(0)
        if status == 0:
            acked.append(uid)
        else:
            unanswered.append(uid)
        with progress.get_lock():
            progress.value += 1
    if assoc is not None:
        assoc.close()
    return {"acked": acked, "unanswered": unanswered, "rtts": rtts, "not_sent": pending}


def _init_progress(value: Any) -> None:
    global _PROGRESS
    _PROGRESS = value


def _pool_send(args: tuple) -> dict[str, Any]:
    port, indices, tag, deadline = args
    return _send_all(port, indices, tag, _PROGRESS, deadline)


def _run_senders(
    port: int, shares: list[list[int]], tag: str, during: Callable[[Any], None] | None = None
) -> tuple[dict, float]:
    """Run one sender process per share; `during(progress)` runs here meanwhile."""
    progress = multiprocessing.Value("i", 0)
    deadline = time.monotonic() + 600
    context = multiprocessing.get_context("fork")
    started = time.monotonic()
    with context.Pool(len(shares), initializer=_init_progress, initargs=(progress,)) as pool:
        pending = pool.map_async(_pool_send, [(port, share, tag, deadline) for share in shares])
        if during is not None:
            during(progress)
        results = pending.get(timeout=900)
    seconds = time.monotonic() - started
    merged: dict[str, list] = {"acked": [], "unanswered": [], "rtts": [], "not_sent": []}
    for result in results:
        for key in merged:
            merged[key] += result[key]
    return merged, seconds


def _shares(count: int, senders: int) -> list[list[int]]:
    return [list(range(start, count, senders)) for start in range(senders)]


# --- (a) crash durability ----------------------------------------------------------------------


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
        _build_engine(server.workdir / "engines")
        report = _crash(server, instances, senders, kills, seed)
        in_jobs = _kill_in_jobs(server, max(1, kills // 2), random.Random(seed + 1))
        report["results"] = {"drained": _drain(server.spool), **_results_at(pacs)}
        report["results"]["series"] = -(-instances // SERIES_SIZE)
        report["results"]["kills_with_a_job_running"] = in_jobs
        report["results"]["jobs_and_forwards_requeued_by_kills"] = _requeued(server.workdir)
        server.stop()
    return report


def _build_engine(engines: Path) -> None:
    """The engine serve would build on first use, built up front (serve's ./engines), so the
    kills land in jobs and forwards rather than in a build that starts over after each one."""
    subprocess.run(
        [sys.executable, "-m", "edgeimg", "build-engine", MODEL, "--engines-dir", str(engines)],
        check=True,
        capture_output=True,
        timeout=600,
    )


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
            temp_left.append(_temp_files(server.spool))
            server.start()

    first, _ = _run_senders(server.port, _shares(instances, senders), "crash", killer)
    stored = _stored(server.spool)
    acked = set(first["acked"])
    unacked_stored = set(first["unanswered"]) & set(stored)
    identical = lost = 0
    for index in range(instances):
        uid, data = payload(index, "crash")
        path = stored.get(uid)
        same = path is not None and path.is_file() and dataset_bytes(path) == data
        identical += same
        lost += uid in acked and not same
    orphans_after_recovery = _temp_files(server.spool)
    # the scanner's retry: everything not acknowledged is sent again; duplicates are stored once
    retry = [i for i in range(instances) if payload(i, "crash")[0] not in acked]
    second, _ = _run_senders(server.port, [retry[k::senders] for k in range(senders)], "crash")
    stored_after = _stored(server.spool)
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


def _drain(spool: Path, timeout: float = DRAIN_TIMEOUT) -> float | None:
    """Wait until every series, job and forward is finished; seconds it took, None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with sqlite3.connect(spool / QUEUE_NAME) as db:
            busy = db.execute(
                "SELECT (SELECT COUNT(*) FROM series WHERE state NOT IN ('done', 'failed'))"
                " + (SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running'))"
                " + (SELECT COUNT(*) FROM forwards WHERE state IN ('pending', 'running'))"
            ).fetchone()[0]
        if busy == 0:
            return round(time.monotonic() - started, 2)
        time.sleep(0.5)
    return None


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


# --- (b) disk full -----------------------------------------------------------------------------


def disk_full(workdir: Path, count: int) -> dict:
    root = workdir / "disk"
    root.mkdir()
    free_mb = shutil.disk_usage(root).free / 2**20
    server = Server(root, "--min-free-mb", f"{free_mb + 64:.0f}")
    server.start()
    statuses = _statuses(server.port, count)
    files = [p for p in (server.spool / "series").rglob("*") if p.is_file()]
    rows = len(_stored(server.spool))
    alive = server.alive()
    server.stop()
    server.args = ("--min-free-mb", "0")
    server.start()
    resumed, _ = _run_senders(server.port, [list(range(count))], "disk")
    stored = len(_stored(server.spool))
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


# --- (c) load ----------------------------------------------------------------------------------


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
        result, seconds = _run_senders(server.port, shares, "load")
        report["levels"][str(level)] = {
            "associations": level,
            "instances": level * per_sender,
            "acknowledged": len(result["acked"]),
            "instances_per_s": round(len(result["acked"]) / seconds, 1),
            **_percentiles(result["rtts"]),
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


# --- (d) under attack --------------------------------------------------------------------------


def _attacker(port: int, kind: str, done: Any, out: Any) -> None:
    """Repeat one attack until `done` is set; count tries and connections never closed."""
    tries = unclosed = 0
    deadline_grace = TIMEOUT + 10
    while not done.is_set():
        tries += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=deadline_grace) as sock:
                if kind == "stall":
                    sock.sendall(struct.pack(">BBL", 0x01, 0, 200) + b"\0" * 10)
                elif kind == "huge":
                    sock.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\0" * 64)
                elif kind == "http":
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n")
                while sock.recv(4096):  # idle / silent TLS: send nothing, wait to be dropped
                    pass
        except TimeoutError:
            unclosed += 1
        except OSError:
            pass
        if kind in ("huge", "http"):
            time.sleep(0.02)
    out.put((kind, tries, unclosed))


def _legit(port: int, count: int, tag: str, tls: ssl.SSLContext | None) -> dict:
    """Send `count` instances (TLS when given), one association per 10, timing each C-STORE."""
    warnings.simplefilter("ignore")
    ok = hangs = busy = 0
    rtts: list[float] = []
    for start in range(0, count, 10):
        try:
            assoc = Association(port, CONTEXTS, timeout=HANG, tls=tls)
        except TimeoutError:
            hangs += 1
            continue
        except (OSError, Closed) as error:
            busy += "reject 2/3/2" in str(error)
            continue
        with assoc:
            for index in range(start, min(start + 10, count)):
                uid, data = payload(index, tag)
                sent = time.monotonic()
                try:
                    status = assoc.store(Store(CTImageStorage, uid, data))
                except TimeoutError:
                    hangs += 1
                    break
                except (OSError, Closed):
                    break
                if status == 0:
                    ok += 1
                    rtts.append(time.monotonic() - sent)
    return {"sent": count, "ok": ok, "hangs": hangs, "busy": busy, "rtts": rtts}


def _legit_process(args: tuple) -> dict:
    port, count, tag, cert = args
    context = None
    if cert is not None:
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
    return _legit(port, count, tag, context)


def attack(workdir: Path, legit: int, idle: int, stalls: int) -> dict:
    report = {}
    plain = Server(workdir / "attack", "--min-free-mb", "0")
    plain.workdir.mkdir()
    kinds = ["idle"] * idle + ["stall"] * stalls + ["huge", "http"]
    report["plain"] = _attack_run(plain, legit, kinds, cert=None)
    tls_dir = workdir / "attack-tls"
    tls_dir.mkdir()
    key, cert = self_signed(tls_dir)
    tls = Server(tls_dir, "--min-free-mb", "0", "--tls-cert", str(cert), "--tls-key", str(key))
    report["tls"] = _attack_run(tls, legit, ["silent-tls"] * (idle + stalls), cert=str(cert))
    return report


def _attack_run(server: Server, legit: int, kinds: list[str], cert: str | None) -> dict:
    server.start()
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        baseline = pool.apply(_legit_process, ((server.port, legit, "baseline", cert),))
        out, done = context.Queue(), context.Event()
        attackers = [
            context.Process(target=_attacker, args=(server.port, kind, done, out)) for kind in kinds
        ]
        for process in attackers:
            process.start()
        time.sleep(0.5)  # attackers in place first
        attacked = pool.apply(_legit_process, ((server.port, legit, "attacked", cert),))
        done.set()
        counts = [out.get(timeout=TIMEOUT + 30) for _ in attackers]
        for process in attackers:
            process.join(10)
    peak = server.peak_rss_mb()
    alive = server.alive()
    server.stop()
    base_p50 = _percentiles(baseline["rtts"])["p50_ms"]
    under = _percentiles(attacked["rtts"])
    return {
        "attackers": {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)},
        "legit_sent": attacked["sent"],
        "legit_success_rate": round(attacked["ok"] / attacked["sent"], 4),
        "legit_associations_rejected_busy": attacked["busy"],
        "baseline_success_rate": round(baseline["ok"] / baseline["sent"], 4),
        "baseline_rtt": _percentiles(baseline["rtts"]),
        "attacked_rtt": under,
        "added_latency_p50_ms": (
            round(under["p50_ms"] - base_p50, 2)
            if under["p50_ms"] is not None and base_p50 is not None
            else None
        ),
        "attack_connections": sum(tries for _, tries, _ in counts),
        "attack_connections_never_closed": sum(unclosed for _, _, unclosed in counts),
        "hangs": attacked["hangs"] + baseline["hangs"] + sum(u for _, _, u in counts),
        "server_alive": alive,
        "server_peak_rss_mb": peak,
    }


# --- (e) connections that never associate ------------------------------------------------------

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
            "association": _percentiles(timed["times"]),
            "association_max_ms": round(1000 * max(timed["times"]), 2) if timed["times"] else None,
            "associations_failed": timed["failed"],
            "stored": len(timed["acked"]),
            "attack": counts,
        }
    report["server_alive"] = server.alive()
    report["server_peak_rss_mb"] = server.peak_rss_mb()
    server.stop()
    stored = _stored(server.spool)
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


# --- (f) slow restart: down for longer than the series timeout ----------------------------------

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
        _build_engine(server.workdir / "engines")
        server.start()
        acked = _send_part(server, _slices(count, 0, FIRST_PART))
        server.kill()
        open_at_kill = _series_states(server.spool).get("received", 0)
        time.sleep(2 * SLOW_QUIET)
        server.start()
        time.sleep(SLOW_QUIET / 2)  # the scanner retries a little later, within the timeout
        acked |= _send_part(server, _slices(count, FIRST_PART, SERIES_SIZE - 1))
        drained = _drain(server.spool)
        after_restart = _revisions_at(pacs)
        acked |= _send_part(server, _slices(count, SERIES_SIZE - 1, SERIES_SIZE))
        drained_late = _drain(server.spool)
        after_late = _revisions_at(pacs)
        states = _series_states(server.spool)
        stored = _stored(server.spool)
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
    result, _ = _run_senders(server.port, [indices[k::4] for k in range(4)], "slow")
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


# --- (g) PHI canary ----------------------------------------------------------------------------

#: scales that run the canary (the test scale leaves it to tests/test_phi_canary.py): every
#: model, the 512 x 512 enhancers included, over longer series than the test's
PHI_CANARY = {
    "bench": dict(models=QUICK_MODELS, slices=16),
    "soak": dict(models=ALL_MODELS, slices=24),
}


def phi_canary(workdir: Path, models: tuple[str, ...], slices: int) -> dict:
    """Marker studies through storescu, TLS, Orthanc, every command and the error paths; the
    markers found in what edgeimg wrote outside the DICOM objects (testsupport/canary.py)."""
    started = time.monotonic()
    run, found = canary_exercise(workdir / "phi", workdir / "phi-engines", models, slices)
    return {
        "models": list(models),
        "slices_per_series": slices,
        "files_searched": found.files,
        "bytes_searched": found.bytes,
        "dicom_objects_left_out": found.dicom_skipped,
        "hits": found.hits[:20],
        "hit_count": len(found.hits),
        "spooled_with_markers": run.counts["spooled with markers"],
        "results_at_pacs": run.counts["results at the PACS"],
        "exit_codes": run.codes,
        "seconds": round(time.monotonic() - started, 1),
    }


def _phi_bars(report: dict) -> dict[str, bool]:
    if "phi_canary" not in report:
        return {}
    return {"PHI canary: markers outside the DICOM objects == 0": not report["phi_canary"]["hits"]}


# --- the report --------------------------------------------------------------------------------


def run(scale: str = "bench") -> dict:
    """All four parts at `scale` (test, bench or soak); the figures and whether the bars hold."""
    settings = SCALES[scale]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeimg-reliability-") as temp:
        workdir = Path(temp)
        report: dict[str, Any] = {
            "scale": scale,
            "settings": settings,
            "cpus": os.cpu_count(),
            "image": f"{SIZE}x{SIZE} CT, 16 bits",
            "serve_timeout_s": TIMEOUT,
        }
        report["crash"] = crash(
            workdir, settings["instances"], settings["senders"], settings["kills"]
        )
        report["disk_full"] = disk_full(workdir, settings["disk"])
        report["load"] = load(workdir, settings["load"], settings["per_sender"])
        report["attack"] = attack(workdir, settings["legit"], settings["idle"], settings["stalls"])
        report["flood"] = flood(workdir, scale)
        report["slow_restart"] = slow_restart(workdir, SLOW_RESTART_SERIES[scale])
        if scale in PHI_CANARY:
            report["phi_canary"] = phi_canary(workdir, **PHI_CANARY[scale])
    report["seconds"] = round(time.monotonic() - started, 1)
    report["bars"] = bars(report)
    return report


def bars(report: dict) -> dict[str, bool]:
    """The issue's bars, each True when met."""
    crashed, disk, attacked = report["crash"], report["disk_full"], report["attack"]
    limit = report["load"]["limit"]
    return {
        "lost == 0": crashed["lost"] == 0,
        "orphan temp files == 0": crashed["orphan_temp_files"] == 0,
        "queue drained, every series has its result at the PACS": (
            crashed["results"]["drained"] is not None
            and crashed["results"]["series_with_results"] == crashed["results"]["series"]
        ),
        "duplicate results at the PACS == 0": crashed["results"]["duplicate_results_at_pacs"] == 0,
        "duplicates stored == 0": crashed["after_retry"]["stored_rows"]
        == crashed["after_retry"]["files"]
        == crashed["instances"],
        "disk full: A700 each, nothing written, alive, resumes": (
            disk["statuses_when_full"] == {"0xA700": disk["instances"]}
            and disk["files_written_when_full"] == 0
            and disk["rows_written_when_full"] == 0
            and disk["process_alive"]
            and disk["stored_after_space_returns"] == disk["instances"]
        ),
        "limit reject is transient 2/3/2": limit["one_more"].startswith("reject 2/3/2")
        and limit["after_a_slot_frees"] == "accepted",
        "legit success under attack == 100%": all(
            part["legit_success_rate"] == 1.0 for part in attacked.values()
        ),
        "hangs == 0": all(part["hangs"] == 0 for part in attacked.values()),
        **flood_bars(report["flood"]),
        **_slow_restart_bars(report["slow_restart"]),
        **_phi_bars(report),
    }


def flood_bars(flooded: dict) -> dict[str, bool]:
    """Issue 15: raw connections and slow-loris peers never keep a real peer out."""
    phases = [flooded[phase] for phase in ("idle", "loris", "both", "storm")]
    return {
        "flood: every association accepted, nothing lost": flooded["lost"] == 0
        and all(phase["associations_failed"] == 0 for phase in phases),
        "flood: association within a second beside 50+ raw connections and slow loris": all(
            (phase["association_max_ms"] or 1e9) < 1000 for phase in phases
        ),
    }


def _slow_restart_bars(slow: dict) -> dict[str, bool]:
    after, late = slow["after_slow_restart"], slow["after_late_slices"]
    return {
        "slow restart: lost == 0": slow["lost"] == 0,
        "slow restart: one result per series, no revision": (
            after["results_at_pacs"] == after["series_with_results"] == slow["series"]
            and after["revisions"] == after["duplicates"] == 0
        ),
        "late slices: one revision and one current result per series, no duplicate": (
            late["revisions"] == slow["series"] == slow["queue_series_revised"]
            and late["current_results_per_series"] == [1]
            and late["duplicates"] == 0
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="soak")
    args = parser.parse_args(argv)
    from benchmarks.__main__ import write_result

    report = run(args.scale)
    path = write_result("reliability", report)
    print(path, file=sys.stderr)
    for bar, met in report["bars"].items():
        print(f"{'ok  ' if met else 'FAIL'} {bar}", file=sys.stderr)
    return 0 if all(report["bars"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
