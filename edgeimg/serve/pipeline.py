"""The worker behind `edgeimg serve`: complete series → models → durable results → forwarding.

All state lives in the queue database, so after a crash the same rows are picked up again;
output UIDs are deterministic, so a repeated job writes and sends the same objects, and the
PACS keeps one copy of each.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from edgeimg.net import Peer, parse_peer, send
from edgeimg.results import write_json
from edgeimg.serve import log
from edgeimg.serve.queue import Queue


class Worker:
    """Runs the configured models on complete series and forwards what they write."""

    def __init__(
        self,
        queue: Queue,
        results_dir: Path,
        models: list[str],
        destinations: list[Peer],
        *,
        backend: str = "auto",
        precision: str = "fp32",
        engines_dir: Path | None = None,
        calling_aet: str = "EDGEIMG",
        max_attempts: int = 5,
        backoff: float = 2.0,
    ) -> None:
        self.queue = queue
        self.results_dir = Path(results_dir)
        self.models = models
        self.destinations = destinations
        self.backend = backend
        self.precision = precision
        self.engines_dir = engines_dir
        self.calling_aet = calling_aet
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._inferencers: dict[str, Any] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgeimg-worker", daemon=True)

    def on_series_complete(self, series_uid: str) -> None:
        """Called by the listener: wake the worker; the queue already holds the series."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60) -> None:
        """Finish the job in hand, then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def warm(self) -> None:
        """Load (building if absent) every model's engine now, not on the first series."""
        for name in self.models:
            self._inferencer(name)

    def _inferencer(self, name: str) -> Any:
        if name not in self._inferencers:
            from edgeimg.engine import load_engine
            from edgeimg.inference import Inferencer
            from edgeimg.plugins import get_registry

            log("engine_loading", model=name, backend=self.backend, precision=self.precision)
            engine = load_engine(name, backend=self.backend, precision=self.precision,
                                 engines_dir=self.engines_dir, build=True)  # fmt: skip
            self._inferencers[name] = Inferencer(get_registry().model(name), engine)
            log("engine_ready", model=name, engine=engine.key)
        return self._inferencers[name]

    def _loop(self) -> None:
        try:
            self.warm()
        except Exception as error:  # reported per job again; the listener keeps storing
            log("engine_failed", error=f"{type(error).__name__}: {error}")
        while not self._stop.is_set():
            busy = self.step()
            if not busy:
                self._wake.wait(0.5)
                self._wake.clear()

    def step(self) -> bool:
        """Do one unit of work (a series to jobs, a job, or due forwards); False when idle."""
        for series_uid in self.queue.claim_series():
            self.queue.add_jobs(series_uid, self.models)
        job = self.queue.next_job()
        if job is not None:
            self._run_job(job)
            return True
        due = self.queue.due_forwards(time.time())
        by_destination: dict[str, list[dict[str, Any]]] = {}
        for forward in due:
            by_destination.setdefault(forward["destination"], []).append(forward)
        for destination, forwards in by_destination.items():
            self._forward(destination, forwards)
        return bool(due)

    def _run_job(self, job: dict[str, Any]) -> None:
        from edgeimg.inference import scan

        started = time.perf_counter()
        try:
            inferencer = self._inferencer(job["model"])
            paths = [Path(p) for p in self.queue.series_paths(job["series_uid"])]
            found = scan(paths, inferencer.spec)
            outputs: list[str] = []
            skipped = []
            for series_job in found.jobs:
                if series_job.skip:
                    skipped.append(series_job.skip)
                    continue
                decoded = _decode(series_job.paths, inferencer.spec)
                out_dir = self.results_dir / job["model"]
                line = inferencer.run_series(series_job, decoded, out_dir).line
                write_json({**line, "job": job["id"]}, self.results_dir)
                outputs.extend(line["outputs"])
        except Exception as error:  # one bad series must not stop the worker
            self.queue.finish_job(job["id"], "failed", error=f"{type(error).__name__}: {error}")
            log("job_failed", job=job["id"], model=job["model"], series_uid=job["series_uid"],
                error=str(error))  # fmt: skip
            return
        state = "done" if outputs or not skipped else "skipped"
        self.queue.finish_job(job["id"], state, outputs=outputs, error="; ".join(skipped) or None)
        self.queue.add_forwards(job["id"], [str(peer) for peer in self.destinations], outputs)
        log("job_done", job=job["id"], model=job["model"], series_uid=job["series_uid"],
            outputs=len(outputs), seconds=round(time.perf_counter() - started, 3))  # fmt: skip
        self._wake.set()

    def _forward(self, destination: str, forwards: list[dict[str, Any]]) -> None:
        """C-STORE due results to one destination in one association; back off on failure."""
        results = send(parse_peer(destination), [f["path"] for f in forwards],
                       calling=self.calling_aet)  # fmt: skip
        by_path = {str(result.path): result for result in results}
        for forward in forwards:
            result = by_path[str(forward["path"])]
            if result.ok:
                self.queue.finish_forward(forward["id"], "done")
                log("forwarded", forward=forward["id"], destination=destination)
                continue
            error = result.error or f"status 0x{(result.status or 0):04X}"
            attempts = forward["attempts"] + 1
            if attempts >= self.max_attempts:
                self.queue.finish_forward(forward["id"], "failed", error=error)
                log("forward_failed", forward=forward["id"], destination=destination,
                    error=error, attempts=attempts)  # fmt: skip
                continue
            retry_at = time.time() + self.backoff * 2 ** (attempts - 1)
            self.queue.finish_forward(forward["id"], "pending", error=error, retry_at=retry_at)
            log("forward_retry", forward=forward["id"], destination=destination, error=error,
                attempts=attempts, retry_in=round(retry_at - time.time(), 1))  # fmt: skip


def _decode(paths: list[Path], spec: Any) -> list[Any]:
    from edgeimg.inference import decode_file

    return [decode_file(path, spec) for path in paths]
