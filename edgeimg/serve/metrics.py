"""What `edgeimg serve --http` exposes at /metrics, and what its status page remembers.

One `ServeMetrics` per serve process, on its own CollectorRegistry (never prometheus-client's
global one, so several listeners in one process, and tests, keep their own counts). The listener
and the worker call its small methods where they already know a fact (a status sent, a job
done, a forward tried); what the queue, the disk or the AE already know (series by state, spool
free space, open associations) is read when Prometheus scrapes, not mirrored here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric

from edgeimg import __version__
from edgeimg.privacy import scrub
from edgeimg.serve.eventlog import log
from edgeimg.serve.queue import SERIES_STATES

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RECENT_SERIES = 20
MINUTES = 60
#: header keywords the status page shows only under --http-show-phi
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")


class Throughput:
    """Events per minute over the last hour, in memory (a restart starts from zero)."""

    def __init__(self, minutes: int = MINUTES) -> None:
        self.minutes = minutes
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, count: int = 1, now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // 60)
        with self._lock:
            if minute not in self._counts:  # a new minute: forget those past the hour
                for old in [m for m in self._counts if m <= minute - self.minutes]:
                    del self._counts[old]
                self._counts[minute] = 0
            self._counts[minute] += count

    def per_minute(self, now: float | None = None) -> list[int]:
        """Counts of the last `minutes` minutes, oldest first, this minute last."""
        minute = int((time.time() if now is None else now) // 60)
        with self._lock:
            return [self._counts.get(m, 0) for m in range(minute - self.minutes + 1, minute + 1)]


@dataclass
class SeriesResult:
    """One finished job as the status page lists it: no patient identity unless asked for."""

    job: int
    series_uid: str
    model: str
    state: str
    finding: str
    instances: int
    finished: float
    seconds: float
    preview: bytes | None = None
    patient: dict[str, str] = field(default_factory=dict)


@dataclass
class DestinationHealth:
    """The last forward attempts to one destination, as the forwarder saw them."""

    last_ok: float | None = None
    last_failure: float | None = None
    last_error: str | None = None

    @property
    def state(self) -> str:
        if self.last_failure is None and self.last_ok is None:
            return "unknown"
        if self.last_failure is not None and (self.last_ok or 0) < self.last_failure:
            return "failing"
        return "ok"


@dataclass
class Sources:
    """Where scrape-time numbers come from: set by `edgeimg serve` once the parts exist."""

    totals: Callable[[], dict[str, Any]]
    free_bytes: Callable[[], int]
    min_free_bytes: int
    associations: Callable[[], int]


class ServeMetrics:
    """Counters, histograms and the page's memory of one serve process.

    `previews` renders a PNG per finished series (only worth it when someone can see the page);
    `show_phi` keeps the patient's name, ID, birth date and accession number beside it.
    """

    def __init__(self, previews: bool = False, show_phi: bool = False) -> None:
        self.previews = previews
        self.show_phi = show_phi
        self.registry = CollectorRegistry()
        registry = self.registry
        self.received = Counter(
            "edgeimg_instances_received", "C-STORE requests answered", registry=registry
        )
        self.stored = Counter(
            "edgeimg_instances_stored",
            "Instances written to the spool and committed (not duplicates)",
            registry=registry,
        )
        self.duplicates = Counter(
            "edgeimg_instances_duplicate",
            "Instances already stored, answered with success again",
            registry=registry,
        )
        self.received_bytes = Counter(
            "edgeimg_received_bytes", "Dataset bytes received", registry=registry
        )
        self.stored_bytes = Counter(
            "edgeimg_stored_bytes", "Bytes written to the spool", registry=registry
        )
        self.statuses = Counter(
            "edgeimg_cstore_responses",
            "C-STORE responses by status code",
            ["status"],
            registry=registry,
        )
        self.accepted = Counter(
            "edgeimg_associations_accepted", "Associations established", registry=registry
        )
        self.refused = Counter(
            "edgeimg_associations_refused",
            "Association requests rejected",
            ["reason"],
            registry=registry,
        )
        self.jobs = Counter(
            "edgeimg_jobs_finished",
            "Model jobs finished, by state",
            ["model", "state"],
            registry=registry,
        )
        self.job_seconds = Histogram(
            "edgeimg_job_seconds",
            "Seconds a job took: read, infer, write results",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end = Histogram(
            "edgeimg_end_to_end_seconds",
            "From a series' last instance received to its results "
            "delivered everywhere (or written, with no destination)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.forwards = Counter(
            "edgeimg_forward_attempts",
            "Forward attempts by outcome: delivered, retry, failed (for good)",
            ["destination", "outcome"],
            registry=registry,
        )
        self.engines = Info(
            "edgeimg_engine", "The engine each routed model runs on", ["model"], registry=registry
        )
        Info("edgeimg_build", "edgeimg version", registry=registry).info({"version": __version__})
        self.stored_per_minute = Throughput()
        self.series_per_minute = Throughput()
        self.destinations: dict[str, DestinationHealth] = {}
        self._recent: deque[SeriesResult] = deque(maxlen=RECENT_SERIES)
        self._lock = threading.Lock()

    # The listener's hooks.

    def response(self, status: int, size: int) -> None:
        """A C-STORE answered with `status`; `size` bytes of dataset came with it."""
        self.received.inc()
        self.received_bytes.inc(size)
        self.statuses.labels(f"0x{status:04X}").inc()

    def instance_stored(self, size: int) -> None:
        self.stored.inc()
        self.stored_bytes.inc(size)
        self.stored_per_minute.add()

    def association(self, refused: str | None = None) -> None:
        """An association established, or refused for the reason given."""
        if refused is None:
            self.accepted.inc()
        else:
            self.refused.labels(refused).inc()

    # The worker's hooks.

    def engine_ready(self, model: str, manifest: dict[str, Any], key: str) -> None:
        self.engines.labels(model).info(
            {
                "version": str(manifest.get("model_version", "")),
                "backend": str(manifest.get("backend", "")),
                "precision": str(manifest.get("precision", "")),
                "key": key,
            }
        )

    def job_finished(self, model: str, state: str, seconds: float) -> None:
        self.jobs.labels(model, state).inc()
        if state == "done":
            self.job_seconds.labels(model).observe(seconds)

    def series_result(
        self,
        result: SeriesResult,
        header: Any = None,
        preview: Callable[[], bytes] | None = None,
    ) -> None:
        """Remember a finished series for the page; the preview is rendered only if wanted."""
        if self.previews and preview is not None:
            try:
                result.preview = preview()
            except Exception as error:  # a preview is a nicety: the result stands without it
                log("preview_failed", job=result.job, error=type(error).__name__)
        if self.show_phi and header is not None:
            result.patient = {k: str(header.get(k, "") or "") for k in PHI_KEYWORDS}
        self.series_per_minute.add()
        with self._lock:
            self._recent.appendleft(result)

    def delivered(self, model: str, last_received: float) -> None:
        """Every result of a job is where it should be: the end of its series' journey."""
        self.end_to_end.labels(model).observe(max(0.0, time.time() - last_received))

    def forward(self, destination: str, outcome: str, error: str | None = None) -> None:
        self.forwards.labels(destination, outcome).inc()
        with self._lock:
            health = self.destinations.setdefault(destination, DestinationHealth())
            if outcome == "delivered":
                health.last_ok = time.time()
            else:
                health.last_failure, health.last_error = time.time(), scrub(error or outcome)

    # Readers.

    def recent(self) -> list[SeriesResult]:
        with self._lock:
            return list(self._recent)

    def preview(self, job: int) -> bytes | None:
        with self._lock:
            return next((r.preview for r in self._recent if r.job == job), None)

    def health(self) -> dict[str, DestinationHealth]:
        with self._lock:
            return dict(self.destinations)

    def watch(self, sources: Sources) -> None:
        """Add the numbers read at scrape time (queue states, spool space, associations)."""
        self.registry.register(_Collector(sources, self))


class _Collector:
    """Gauges that are read, not counted: a scrape asks the queue and the disk."""

    def __init__(self, sources: Sources, metrics: ServeMetrics) -> None:
        self.sources = sources
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # read at scrape time; nothing to check against other collectors' names

    def collect(self) -> Iterator[Metric]:
        try:
            totals = self.sources.totals()
        except sqlite3.Error as error:
            log("metrics_queue_error", error=str(error))
            totals = None
        if totals is not None:
            yield _by_state(
                "edgeimg_queue_series", "Series in the queue by state", totals["series"]
            )
            yield _by_state("edgeimg_queue_jobs", "Jobs by state", totals["jobs"])
            yield _by_state("edgeimg_queue_forwards", "Forwards by state", totals["forwards"])
            yield GaugeMetricFamily(
                "edgeimg_queue_instances", "Instances held in the spool", value=totals["instances"]
            )
        yield GaugeMetricFamily(
            "edgeimg_spool_free_bytes",
            "Free disk where the spool is",
            value=self.sources.free_bytes(),
        )
        yield GaugeMetricFamily(
            "edgeimg_spool_min_free_bytes",
            "Below this much free disk, instances are refused (A700)",
            value=self.sources.min_free_bytes,
        )
        yield GaugeMetricFamily(
            "edgeimg_associations_open",
            "Associations established now",
            value=self.sources.associations(),
        )
        healthy = GaugeMetricFamily(
            "edgeimg_destination_healthy",
            "1 when the last forward to a destination succeeded",
            labels=["destination"],
        )
        for name, health in sorted(self.metrics.health().items()):
            healthy.add_metric([name], float(health.state == "ok"))
        yield healthy


def _by_state(name: str, documentation: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    states = SERIES_STATES if name == "edgeimg_queue_series" else ()
    for state in sorted(set(states) | set(counts)):
        family.add_metric([state], counts.get(state, 0))
    return family
