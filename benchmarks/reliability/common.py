"""What every part shares: the serve process it drives, the instances it sends, the sender
processes and the reads of the spool's queue that judge the outcome.
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from edgeimg.sdk.metrics import percentile
from edgeimg.serve.spool import QUEUE_NAME, TEMP_PREFIX
from testsupport.corpus import encoded, instance, uid
from testsupport.peers import free_port, start_serve, stop
from testsupport.rawdicom import AET, Association, Closed, Store

SIZE = 64
SERIES_SIZE = 20
MODEL = "cnn"
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


def stored_instances(spool: Path) -> dict[str, Path]:
    with sqlite3.connect(spool / QUEUE_NAME) as db:
        return {uid: Path(path) for uid, path in db.execute("SELECT sop_uid, path FROM instances")}


def temp_files(spool: Path) -> int:
    return sum(1 for _ in spool.rglob(f"{TEMP_PREFIX}*"))


def ms_percentiles(values: list[float]) -> dict[str, float | None]:
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


def run_senders(
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


def round_robin(count: int, senders: int) -> list[list[int]]:
    return [list(range(start, count, senders)) for start in range(senders)]


def build_engine_up_front(engines: Path) -> None:
    """The engine serve would build on first use, built up front (serve's ./engines), so the
    kills land in jobs and forwards rather than in a build that starts over after each one."""
    subprocess.run(
        [sys.executable, "-m", "edgeimg", "build-engine", MODEL, "--engines-dir", str(engines)],
        check=True,
        capture_output=True,
        timeout=600,
    )


def drain(spool: Path, timeout: float = DRAIN_TIMEOUT) -> float | None:
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
