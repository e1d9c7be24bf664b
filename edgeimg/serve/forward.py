"""Forwarding `serve`'s results: de-identified copies where a destination asks, queued forwards,
sending with retry and backoff, and the end-to-end latency once a job is delivered.

The queue holds every forward, so a crash between queueing and sending loses nothing; output
files are named by their SOP Instance UID, which is what the audit trail records of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydicom.uid import UID

from edgeimg.durable import atomic_file
from edgeimg.serve.deliver import deliver
from edgeimg.serve.eventlog import log
from edgeimg.serve.metrics import ServeMetrics
from edgeimg.serve.queue import Queue
from edgeimg.serve.routing import Destination, Routing


class Forwarder:
    """Queues a job's outputs for its destinations and sends what is due."""

    def __init__(
        self,
        queue: Queue,
        routing: Routing,
        metrics: ServeMetrics,
        audit: Callable[..., None],
        *,
        calling_aet: str,
        max_attempts: int,
        backoff: float,
        deid_key: bytes | None,
        deid_dir: Path,
    ) -> None:
        self.queue = queue
        self.routing = routing
        self.metrics = metrics
        self.audit = audit
        self.calling_aet = calling_aet
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.deid_key = deid_key
        self.deid_dir = deid_dir

    def add(
        self, job_id: int, destinations: list[Destination], outputs: list[str], model: str
    ) -> None:
        """Queue each output (or its de-identified copy) for each destination, once however
        often a re-run job calls this."""
        for destination in destinations:
            sent = [self.prepare(destination, Path(path), model) for path in outputs]
            self.queue.add_forwards(job_id, [destination.name], [str(path) for path in sent])

    def prepare(self, destination: Destination, result: Path, model: str) -> Path:
        """The file to send to `destination`: the result, or its de-identified copy.

        The copy is named by its (mapped) SOP Instance UID under deid/<destination>/<model>/,
        and written durably before its forward row exists; the same key maps the same UIDs, so
        a re-run writes the same file and the destination keeps one copy.
        """
        if destination.deid is None:
            return result
        from pydicom import dcmread

        from edgeimg.dicom.deid import DeidOptions, deidentify
        from edgeimg.dicom.uids import check_uid

        options = DeidOptions(self.deid_key or b"", **asdict(destination.deid))
        source = dcmread(result)
        deidentified = deidentify(source, options)
        sop_uid = check_uid(str(deidentified.dataset.SOPInstanceUID))
        target = self.deid_dir / destination.name / model / f"{sop_uid}.dcm"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target) as handle:
                deidentified.dataset.save_as(handle, enforce_file_format=True)
        self.audit(
            "deidentified",
            destination=destination.name,
            model=model,
            result_uid=str(source.SOPInstanceUID),
            sop_instance_uid=sop_uid,
            burned_in_risk=deidentified.burned_in_risk,
        )
        return target

    def send_due(self) -> bool:
        """Send every forward whose time has come, one batch per destination; False if none."""
        due = self.queue.due_forwards(time.time())
        by_destination: dict[str, list[dict[str, Any]]] = {}
        for forward in due:
            by_destination.setdefault(forward["destination"], []).append(forward)
        for destination, forwards in by_destination.items():
            self.send(destination, forwards)
        return bool(due)

    def send(self, name: str, forwards: list[dict[str, Any]]) -> None:
        """Send due results to one destination (one association, or STOW-RS requests); back
        off on failure."""
        destination = self.routing.destinations.get(name)
        if destination is None:  # the config changed since the forward was queued
            error = f"destination {name!r} is not configured"
            for forward in forwards:
                self.queue.finish_forward(forward["id"], "failed", error=error)
            log("forward_failed", destination=name, error="not configured", count=len(forwards))
            return
        results = deliver(destination, [f["path"] for f in forwards], self.calling_aet)
        by_path = {str(result.path): result for result in results}
        delivered: list[dict[str, Any]] = []
        for forward in forwards:
            result = by_path[str(forward["path"])]
            if result.ok:
                self.queue.finish_forward(forward["id"], "done")
                self.metrics.forward(name, "delivered")
                delivered.append(forward)
                log("forwarded", forward=forward["id"], destination=name)
                continue
            error = result.error or f"status 0x{(result.status or 0):04X}"
            self._failed(destination, forward, error)
        for job_id in sorted({f["job_id"] for f in delivered}):
            self.delivered(job_id)
        if delivered:
            self.audit(
                "forwarded",
                destination=name,
                peer=destination.peer,
                deid=destination.deid is not None,
                jobs=sorted({f["job_id"] for f in delivered}),
                sop_instance_uids=[sop_uid_of(f["path"]) for f in delivered],
            )

    def _failed(self, destination: Destination, forward: dict[str, Any], error: str) -> None:
        """One forward not accepted: failed for good after max_attempts, else retried later."""
        name = destination.name
        attempts = forward["attempts"] + 1
        if attempts >= self.max_attempts:
            self.queue.finish_forward(forward["id"], "failed", error=error)
            self.metrics.forward(name, "failed", error)
            log(
                "forward_failed",
                forward=forward["id"],
                destination=name,
                error=error,
                attempts=attempts,
            )
            self.audit(
                "forward_failed",
                destination=name,
                peer=destination.peer,
                job=forward["job_id"],
                sop_instance_uid=sop_uid_of(forward["path"]),
                error=error,
                attempts=attempts,
            )
            return
        retry_at = time.time() + self.backoff * 2 ** (attempts - 1)
        self.queue.finish_forward(forward["id"], "pending", error=error, retry_at=retry_at)
        self.metrics.forward(name, "retry", error)
        log(
            "forward_retry",
            forward=forward["id"],
            destination=name,
            error=error,
            attempts=attempts,
            retry_in=round(retry_at - time.time(), 1),
        )

    def delivered(self, job_id: int) -> None:
        """Observe the end-to-end latency once every result of the job has been delivered."""
        delivery = self.queue.delivery(job_id)
        if delivery is not None and delivery["undelivered"] == 0:
            self.metrics.delivered(delivery["model"], delivery["last_received"])


def sop_uid_of(path: str | Path) -> str:
    """The SOP Instance UID of an output or of its de-identified copy, for the audit trail.

    Outputs are saved as <SOPInstanceUID>.dcm (`edgeimg.dicom.write.save`, the SDK's `save`),
    so the name says it; only a file some other writer named otherwise is read for it.
    """
    stem = Path(path).stem
    if UID(stem).is_valid:
        return stem
    from pydicom import dcmread

    header = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return str(header.get("SOPInstanceUID", ""))
