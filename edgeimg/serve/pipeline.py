"""The worker behind `edgeimg serve`: complete series → routed models → durable results → forwards.

All state lives in the queue database, so after a crash the same rows are picked up again;
output UIDs are deterministic, so a repeated job writes and sends the same objects, and the
PACS keeps one copy of each. A job on a series that grew after its results were made writes new
objects (new sources, new UIDs) that supersede the old ones: its SR names the SR it replaces.
Which model runs on a series, and where its outputs go, comes from the routing tables
(`edgeimg.serve.routing`). Routing and series grouping read the queue's rows, not the files
(`edgeimg.serve.rows`); the series runs through the runner `edgeimg run` uses
(`edgeimg.pipeline`), and `edgeimg.serve.forward` sends what it wrote.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeimg.audit import AuditLog
from edgeimg.engine.errors import EngineOffline
from edgeimg.errors import user_message
from edgeimg.privacy import describe
from edgeimg.results import write_lines
from edgeimg.sdk.metrics import percentile
from edgeimg.serve.eventlog import log
from edgeimg.serve.forward import Forwarder, sop_uid_of
from edgeimg.serve.metrics import SeriesResult, ServeMetrics
from edgeimg.serve.priors import (
    Prior,
    PriorsUnavailable,
    fetch_priors,
    prior_headers,
    with_priors,
)
from edgeimg.serve.queue import Queue
from edgeimg.serve.revisions import superseded_headers
from edgeimg.serve.routing import Routing, SeriesFacts
from edgeimg.serve.rows import facts_of, header_of

if TYPE_CHECKING:
    from edgeimg.pipeline import SeriesRun

LATENCY_WINDOW = 500
"""Job durations kept per model for the p50/p95 the status view shows."""
ENGINE_MAX_WAIT = 60.0
"""Longest pause, in seconds, between tries of a job whose engine is offline."""
PRIORS_MAX_WAIT = 300.0
"""Seconds between tries at most, for a job whose priors source is down (it waits, not fails)."""


class Worker:
    """Runs the routed models on complete series and forwards what they write."""

    def __init__(
        self,
        queue: Queue,
        results_dir: Path,
        routing: Routing,
        *,
        backend: str = "auto",
        precision: str = "fp32",
        calib: Sequence[Path] = (),
        engines_dir: Path | None = None,
        calling_aet: str = "EDGEIMG",
        max_attempts: int = 5,
        backoff: float = 2.0,
        audit: AuditLog | None = None,
        deid_key: bytes | None = None,
        deid_dir: Path | None = None,
        metrics: ServeMetrics | None = None,
        priors_move_port: int = 0,
    ) -> None:
        if deid_key is None and any(d.deid for d in routing.destinations.values()):
            raise ValueError("a de-identifying destination needs a deid_key")
        self.queue = queue
        self.results_dir = Path(results_dir)
        self.routing = routing
        self.backend = backend
        self.precision = precision
        self.calib = list(calib)  # what an INT8 engine was calibrated on (its key)
        self.engines_dir = engines_dir
        self.calling_aet = calling_aet
        self.backoff = backoff
        self.audit = audit
        self.metrics = metrics or ServeMetrics()
        self.forwarder = Forwarder(
            queue,
            routing,
            self.metrics,
            self._audit,
            calling_aet=calling_aet,
            max_attempts=max_attempts,
            backoff=backoff,
            deid_key=deid_key,
            deid_dir=Path(deid_dir) if deid_dir else self.results_dir.parent / "deid",
        )
        self.priors_move_port = priors_move_port
        self._inferencers: dict[str, Any] = {}
        self._durations: dict[str, deque[float]] = {}
        self._durations_lock = threading.Lock()
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
        """Load (building if absent) every routed model's engine now, not on the first series."""
        for name in self.routing.models:
            self._inferencer(name)

    def latency(self) -> dict[str, dict[str, float]]:
        """Per model: jobs timed (of the last LATENCY_WINDOW) and their p50/p95 in seconds."""
        with self._durations_lock:
            samples = {model: list(times) for model, times in self._durations.items()}
        return {
            model: {
                "jobs": len(times),
                "p50": round(percentile(times, 50), 4),
                "p95": round(percentile(times, 95), 4),
            }
            for model, times in samples.items()
            if times
        }

    def _inferencer(self, name: str) -> Any:
        if name not in self._inferencers:
            from edgeimg.engine import load_engine
            from edgeimg.pipeline import Inferencer
            from edgeimg.plugins import get_registry

            log("engine_loading", model=name, backend=self.backend, precision=self.precision)
            registry = get_registry()
            spec = registry.model(name)
            engine = load_engine(
                spec,
                registry.backends,
                backend=self.backend,
                precision=self.precision,
                engines_dir=self.engines_dir,
                build=True,
                calib=self.calib,
            )
            self._inferencers[name] = Inferencer(spec, engine)
            self.metrics.engine_ready(name, getattr(engine, "manifest", {}), engine.key)
            log("engine_ready", model=name, engine=engine.key)
        return self._inferencers[name]

    def _loop(self) -> None:
        try:
            self.warm()
        except Exception as error:  # reported per job again; the listener keeps storing
            log("engine_failed", error=describe(error))
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception as error:  # the queue is the state: log, pause, pick it up again
                log("worker_error", error=describe(error))
                busy = False
            if not busy:
                self._wake.wait(0.5)
                self._wake.clear()

    def step(self) -> bool:
        """Do one unit of work (series to jobs, a job, or due forwards); False when idle."""
        for series_uid in self.queue.claim_series():
            self._route(series_uid)
        job = self.queue.next_job()
        if job is not None:
            self._run_job(job)
            return True
        return self.forwarder.send_due()

    def _route(self, series_uid: str) -> None:
        try:
            facts = facts_of(self.queue.series_rows(series_uid))
        except Exception as error:  # stored instances were validated; this is unexpected
            log("route_failed", series_uid=series_uid, error=describe(error))
            self.queue.add_jobs(series_uid, [])
            return
        models = [model for model, _ in self.routing.models_for(facts)]
        self.queue.add_jobs(series_uid, models)
        log(
            "routed",
            series_uid=series_uid,
            modality=facts.modality,
            body_part=facts.body_part,
            slices=facts.slices,
            models=models,
        )

    def _run_job(self, job: dict[str, Any]) -> None:
        from edgeimg.pipeline import run_series, series_jobs

        started = time.perf_counter()
        model = job["model"]
        rows = self.queue.series_rows(job["series_uid"])
        try:
            inferencer = self._inferencer(model)
            facts = facts_of(rows)
            priors = self._priors(job, inferencer.spec, facts, rows)
            compared = with_priors(inferencer, priors)
            superseded = superseded_headers(self.queue, job)
            supersedes = [str(ds.SOPInstanceUID) for ds in superseded]
            srs = tuple(ds for ds in superseded if ds.get("Modality") == "SR")
            producer = replace(
                inferencer.producer, predecessors=srs, other_evidence=prior_headers(priors)
            )
            found = series_jobs([header_of(row) for row in rows], inferencer.spec)
            skipped = [series.skip for series in found if series.skip]
            accepted = [series for series in found if not series.skip]
            outputs: list[str] = []
            lines: list[dict[str, Any]] = []
            shown = None
            out_dir = self.results_dir / model
            for series in run_series(inferencer, accepted, out_dir, producer=producer, whole=True):
                series.raise_failure()
                compared(series.line)
                shown = series
                written_files = series.line.pop("written_files", [])
                line = {**series.line, "job": job["id"], "written_files": written_files}
                lines.append({**line, "supersedes": supersedes})
                outputs.extend(series.line["outputs"])  # DICOM objects: the ones forwarded
            # One write once every series ran: a job retried after an outage adds no duplicates.
            if lines:
                write_lines(lines, self.results_dir)
            # Forwards are queued before the job is marked done: a crash in between re-runs
            # the job, and add_forwards does not queue the same output twice.
            destinations = self.routing.destinations_for(model, facts)
            self.forwarder.add(job["id"], destinations, outputs, model)
        except EngineOffline as error:  # a remote engine is down: wait for it, never fail
            # open the engine afresh on the next try: a server back with another engine is
            # checked (and verified) again
            self._inferencers.pop(job["model"], None)
            self._wait(job, str(error), ENGINE_MAX_WAIT)
            return
        except PriorsUnavailable as error:  # transient: the job waits, it does not fail
            self._wait(job, f"waiting for priors: {error}", PRIORS_MAX_WAIT)
            return
        except Exception as error:  # one bad series must not stop the worker
            message = user_message(error, f"running {model}")
            self.queue.finish_job(job["id"], "failed", error=message)
            self.metrics.job_finished(model, "failed", time.perf_counter() - started)
            failed = dict(job=job["id"], model=model, series_uid=job["series_uid"], error=message)
            log("job_failed", **failed)
            self._audit("job_failed", **failed)
            return
        finally:  # the result names the priors; a waiting job fetches them again
            shutil.rmtree(self._priors_dir(job), ignore_errors=True)
        seconds = time.perf_counter() - started
        state = "done" if outputs or not skipped else "skipped"
        reasons = "; ".join(skipped) or None
        self.queue.finish_job(job["id"], state, outputs=outputs, error=reasons, inputs=len(rows))
        if shown is not None:
            self._observed(job, inferencer.spec, shown, instances=len(rows), seconds=seconds)
        if state == "done" and not (outputs and destinations):
            self.forwarder.delivered(job["id"])
        self.metrics.job_finished(model, state, seconds)  # last: what it counts is recorded
        if state == "done":
            with self._durations_lock:
                self._durations.setdefault(model, deque(maxlen=LATENCY_WINDOW)).append(seconds)
        log(
            "job_done",
            job=job["id"],
            model=model,
            series_uid=job["series_uid"],
            state=state,
            outputs=len(outputs),
            seconds=round(seconds, 3),
            supersedes=len(supersedes),
            priors=len(priors),
        )
        self._audit(
            "job_done",
            job=job["id"],
            model=model,
            engine_key=inferencer.engine.key,
            series_uid=job["series_uid"],
            state=state,
            outputs=[{"sop_instance_uid": sop_uid_of(p), "path": p} for p in outputs],
            destinations=[d.name for d in destinations],
            supersedes=supersedes,
            priors=[prior.study_uid for prior in priors],
        )
        self._wake.set()

    def _wait(self, job: dict[str, Any], reason: str, longest: float) -> None:
        """Back off (doubling up to `longest` seconds) and try the job again later; `edgeimg
        queue` shows what it waits for."""
        delay = min(longest, self.backoff * 2 ** min(job["attempts"] - 1, 20))
        self.queue.defer_job(job["id"], reason, time.time() + delay)
        log(
            "job_waiting",
            job=job["id"],
            model=job["model"],
            series_uid=job["series_uid"],
            reason=reason,
            attempts=job["attempts"],
            retry_in=round(delay, 1),
        )

    def _priors_dir(self, job: dict[str, Any]) -> Path:
        return self.results_dir.parent / "priors" / f"job-{job['id']}"

    def _priors(
        self, job: dict[str, Any], spec: Any, facts: SeriesFacts, rows: list[dict[str, Any]]
    ) -> list[Prior]:
        """The prior studies a model that declares `priors` gets, fetched now (none when the
        model asks for none or no priors source is configured for its route). The queue keeps
        no patient data, so this reads one header for the PatientID and study date."""
        if spec.priors <= 0:
            return []
        from pydicom import dcmread

        from edgeimg.net import parse_peer

        source = self.routing.priors_source(job["model"], facts)
        if source is None:
            log("priors_not_configured", job=job["id"], model=job["model"])
            return []
        header = dcmread(
            rows[0]["path"],
            stop_before_pixels=True,
            specific_tags=["PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "Modality"],
        )
        priors = fetch_priors(
            parse_peer(source),
            header,
            spec.priors,
            self._priors_dir(job),
            calling=self.calling_aet,
            move_port=self.priors_move_port,
        )
        log("priors_fetched", job=job["id"], model=job["model"], priors=len(priors))
        return priors

    def _observed(
        self,
        job: dict[str, Any],
        spec: Any,
        series: SeriesRun,
        instances: int,
        seconds: float,
    ) -> None:
        """Tell the metrics (and so the status page) what a job found."""
        from edgeimg.preview import thumbnail
        from edgeimg.results import finding

        entry = SeriesResult(
            job=job["id"],
            series_uid=job["series_uid"],
            model=spec.name,
            state="done",
            finding=finding(series.line["results"]),
            instances=instances,
            finished=time.time(),
            seconds=seconds,
        )
        self.metrics.series_result(
            entry,
            series.decoded[0].header,
            lambda: thumbnail(spec, series.decoded, series.items),
        )

    def _audit(self, event: str, **fields: Any) -> None:
        """Record to the audit log when there is one; a failing audit write is logged, and the
        work goes on (the queue, not the audit trail, is what must not lose anything)."""
        if self.audit is None:
            return
        try:
            self.audit.record(event, **fields)
        except (OSError, ValueError) as error:
            log("audit_failed", audit_event=event, error=describe(error))
