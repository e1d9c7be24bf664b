"""The DICOM listener: a pynetdicom AE that stores what scanners send, durably, then says so.

It handles associations (who may connect, when a series is complete) and storing (spool, queue
row, audit line, then the success status). What a received instance must pass is
`edgeimg.serve.received` (with the checks `read` shares, in `edgeimg.dicom`); what it needs
from pynetdicom beyond the public API (a gate that keeps connections without an
A-ASSOCIATE-RQ out of the association slots, PDU length checks, event-driven reactor threads,
fast C-STORE responses) is in `edgeimg.serve.pynetdicom_adapter`, the one module allowed to
touch pynetdicom's internals.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.events import Event

from edgeimg.audit import AuditWriter
from edgeimg.dicom.filemeta import file_meta
from edgeimg.serve import pynetdicom_adapter as adapter
from edgeimg.serve.ae import make_ae, refusal
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.eventlog import log
from edgeimg.serve.metrics import ServeMetrics
from edgeimg.serve.preassociation import Pending
from edgeimg.serve.queue import GroupCommit, Instance, Queue
from edgeimg.serve.received import (
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    Rejected,
    status_dataset,
    write_refused,
)
from edgeimg.serve.received import ReceivedChecks as _Checks
from edgeimg.serve.rows import instance_of
from edgeimg.serve.security import is_allowed
from edgeimg.serve.series_handler import NoPipeline, Pipeline
from edgeimg.serve.spool import Spool, Staged

_LOCK_STRIPES = 64


class Listener:
    """Owns the AE, the server thread and the series-completion watcher."""

    def __init__(
        self,
        config: ServeConfig,
        pipeline: Pipeline | None = None,
        spool: Spool | None = None,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline or NoPipeline()
        self.spool = spool or Spool(config.spool, config.min_free_mb)
        self.queue = Queue(self.spool.queue_path)
        self.audit: Any = None  # an edgeimg.audit.AuditLog, set by `edgeimg serve`
        self.metrics = metrics or ServeMetrics()
        self._commits = GroupCommit(self.queue)
        # Each instance is checked and hashed here while it is written, and renamed while its
        # row commits.
        self._publisher = ThreadPoolExecutor(2 * config.max_associations, "edgeimg-publish")
        # Audit lines are written off the path of the C-STORE response, many per fsync.
        self._auditor = AuditWriter(_audit_failed)
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._seen: dict[int, set[str]] = {}
        self._seen_lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._acceptor: threading.Thread | None = None
        self.pending: Pending | None = None
        self._watcher: threading.Thread | None = None
        self.ae: AE = make_ae(config)

    def recover(self) -> None:
        """Undo what a crash left: temp files go, interrupted work is queued again."""
        removed = self.spool.remove_temp_files()
        dropped = self.queue.drop_unwritten()
        requeued = self.queue.recover()
        self.queue.set_config(
            aet=self.config.aet,
            models=self.config.models,
            forwards=[str(peer) for peer in self.config.forwards],
        )
        log("recovered", temp_files_removed=removed, rows_without_file=dropped, requeued=requeued)

    def start(self) -> tuple[str, int]:
        """Recover, bind and serve in background threads; returns the bound (host, port)."""
        self.recover()
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, lambda event: self.metrics.association()),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_connection_closed),
        ]
        config = self.config
        self.pending = Pending(config.artim, config.pending_per_host, config.pending_total)
        server = adapter.serve(
            self.ae,
            (config.host, config.port),
            self.pending,
            ae_title=config.aet,
            contexts=self.ae.supported_contexts,
            ssl_context=config.tls,
            evt_handlers=handlers,
        )
        self._server = server
        self._acceptor = threading.Thread(
            target=server.serve_forever, name="edgeimg-accept", daemon=True
        )
        self._acceptor.start()
        self._watcher = threading.Thread(target=self._watch, name="edgeimg-series", daemon=True)
        self._watcher.start()
        host, port = server.server_address[:2]
        log("listening", aet=self.config.aet, host=host, port=port, tls=self.config.tls is not None)
        return host, port

    def accepting(self) -> bool:
        """Bound and serving: what a readiness probe asks first."""
        return self._server is not None and self._acceptor is not None and self._acceptor.is_alive()

    def stop(self, drain_timeout: float = 30) -> bool:
        """Stop accepting, let in-flight associations finish; True if all finished in time."""
        if self._server is None:
            return True
        server, self._server = self._server, None
        server.shutdown()
        if self.pending is not None:
            self.pending.stop()
        deadline = time.monotonic() + drain_timeout
        while _in_flight(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        drained = not _in_flight(server)
        for assoc in server.active_associations:
            # Established ones past the deadline get an A-ABORT; connections that never asked
            # for an association are just dropped.
            if assoc.is_established:
                assoc.abort()
            else:
                assoc.kill()
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self._publisher.shutdown(wait=True)
        self._auditor.close()
        log("stopped", drained=drained)
        return drained

    def _watch(self) -> None:
        interval = min(1.0, max(self.config.series_timeout / 4, 0.05))
        while not self._stop.wait(interval):
            try:
                self._completed(
                    self.queue.complete(self.queue.quiet_series(self.config.series_timeout)),
                    "quiet",
                )
            except sqlite3.Error as error:
                log("queue_error", error=str(error))

    def _completed(self, series_uids: list[str], reason: str) -> None:
        for uid in series_uids:
            log("series_complete", series_uid=uid, reason=reason)
            try:
                self.pipeline.on_series_complete(uid)
            except Exception as error:
                log("pipeline_error", series_uid=uid, error=repr(error))

    def _on_requested(self, event: Event) -> None:
        request = event.assoc.requestor.primitive
        calling = request.calling_ae_title.strip()
        host = event.assoc.requestor.address
        allowed = is_allowed(self.config.allow, calling, host)
        refused = refusal(request) if allowed else (3, "not allowed")
        if refused:
            log("association_rejected", calling_aet=calling, host=host, reason=refused[1])
            self.metrics.association(refused=refused[1])
            adapter.reject(event.assoc, refused[0])
            return
        called = request.called_ae_title.strip()
        if called != self.config.aet:
            log(
                "association_rejected",
                calling_aet=calling,
                called_aet=called,
                host=host,
                reason="called AE title",
            )
            return
        log("association", calling_aet=calling, host=host)

    def _on_rejected(self, event: Event) -> None:
        """pynetdicom's own rejections: a wrong called AE title, or no association slot free."""
        called = event.assoc.requestor.primitive.called_ae_title.strip()
        self.metrics.association(refused="called AE title" if called != self.config.aet else "busy")

    def _on_released(self, event: Event) -> None:
        self._end(event, released=True)

    def _on_aborted(self, event: Event) -> None:
        self._end(event, released=False)

    def _on_connection_closed(self, event: Event) -> None:
        """Also reached first after a release, when the peer closes right on our reply."""
        self._end(event, released=adapter.release_requested(event.assoc))

    def _end(self, event: Event, released: bool) -> None:
        seen = self._forget(event)
        if released and self.config.complete_on_release and seen:
            self._completed(self.queue.complete(sorted(seen)), "released")

    def _forget(self, event: Event) -> set[str]:
        with self._seen_lock:
            return self._seen.pop(id(event.assoc), set())

    def _on_store(self, event: Event) -> Dataset:
        assoc = event.assoc
        calling, host = assoc.requestor.ae_title.strip(), assoc.requestor.address
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        try:
            instance = self._ingest(event, calling, host)
        except Rejected as rejected:
            log(
                "store_failed",
                sop_uid=sop_uid,
                calling_aet=calling,
                host=host,
                status=f"0x{rejected.status:04X}",
                reason=rejected.reason,
            )
            return self._respond(event, rejected.status, rejected.reason)
        except Exception as error:
            log("store_error", sop_uid=sop_uid, calling_aet=calling, error=repr(error))
            return self._respond(event, OUT_OF_RESOURCES, "internal error while storing")
        with self._seen_lock:
            self._seen.setdefault(id(assoc), set()).add(instance.series_uid)
        return self._respond(event, SUCCESS)

    def _respond(self, event: Event, code: int, comment: str | None = None) -> Dataset:
        self.metrics.response(code, _dataset_size(event))
        return status_dataset(code, comment)

    def _ingest(self, event: Event, calling: str, host: str) -> Instance:
        """Check, write, commit; raises `Rejected` with the PS3.4 status otherwise.

        This thread writes the received bytes to a temp file, then fsyncs it while publisher
        threads decode, check and hash the dataset; the rename then runs while the row commits.
        A serial sender waits for the slower of each pair, not for their sum. What is refused is
        discarded.
        """
        request = event.request
        sop_class = str(request.AffectedSOPClassUID)
        sop_uid = str(request.AffectedSOPInstanceUID)
        if sop_class != str(event.context.abstract_syntax):
            raise Rejected(SOP_CLASS_NOT_SUPPORTED, "SOP class differs from the context")
        syntax = UID(event.context.transfer_syntax)
        raw = request.DataSet.getvalue()
        header = file_meta(sop_class, sop_uid, str(syntax), calling)
        size = len(header) + len(raw)
        checks = _Checks(self._publisher, event, raw, syntax, sop_class, sop_uid, header)
        staged = self._stage([header, raw], size, checks)
        with self._locks[hash(sop_uid) % _LOCK_STRIPES]:
            if self.queue.has_instance(sop_uid):
                Spool.discard(staged)
                log("duplicate", sop_uid=sop_uid, calling_aet=calling, host=host)
                instance = instance_of(checks.dataset, "", 0, "", calling, host)
                self._audit(instance, duplicate=True)
                return instance
            path = self.spool.path_for(checks.series_uid, sop_uid)
            instance = instance_of(checks.dataset, str(path), size, checks.sha256(), calling, host)
            placed = self._publisher.submit(self.spool.place, staged, path)
            complete = self._commit(instance, path, placed)
        self.metrics.instance_stored(size)
        log(
            "stored",
            sop_uid=sop_uid,
            series_uid=instance.series_uid,
            study_uid=instance.study_uid,
            calling_aet=calling,
            host=host,
            size=size,
        )
        self._audit(instance, duplicate=False)
        if complete:
            self._completed([instance.series_uid], "expected count")
        return instance

    def _stage(self, chunks: list[bytes], size: int, checks: _Checks) -> Staged:
        """Stage `chunks`, running `checks` during the sync; a refusal of the data comes first."""
        try:
            staged = self.spool.stage(chunks, size, while_syncing=checks.start)
        except OSError as error:
            checks.wait()
            raise write_refused(error) from None
        try:
            checks.wait()
        except BaseException:
            Spool.discard(staged)
            raise
        return staged

    def _commit(self, instance: Instance, path: Path, placed: Future) -> bool:
        """Commit the row while `placed` makes the file durable; success needs both.

        Returns whether the series is now complete by its expected count. A row committed
        beside a file that failed is removed again (and `Queue.drop_unwritten` does the same for
        a crash in between, when no success was sent).
        """
        try:
            _, complete = self._commits.add(instance)
        except sqlite3.Error as error:
            placed.exception()
            path.unlink(missing_ok=True)
            raise Rejected(OUT_OF_RESOURCES, f"queue: {error}") from None
        try:
            placed.result()
        except OSError as error:
            self.queue.remove_instances([instance.sop_uid])
            path.unlink(missing_ok=True)
            raise write_refused(error) from None
        return complete

    def _audit(self, instance: Instance, duplicate: bool) -> None:
        """Queue the `received` audit line (no patient identity: UIDs, AE title, host)."""
        if self.audit is None:
            return
        fields = dict(
            calling_aet=instance.calling_aet,
            host=instance.peer_host,
            study_uid=instance.study_uid,
            series_uid=instance.series_uid,
            sop_instance_uid=instance.sop_uid,
            duplicate=duplicate,
        )
        self._auditor.record(self.audit, "received", **fields)


def _audit_failed(error: Exception, events: list[dict[str, Any]]) -> None:
    for fields in events:
        log("audit_error", sop_uid=fields.get("sop_instance_uid"), error=str(error))


def _in_flight(server: Any) -> list:
    """Associations that may be mid-transfer (idle connections without a request don't count)."""
    return [assoc for assoc in server.active_associations if assoc.is_established]


def _dataset_size(event: Event) -> int:
    """Bytes of the received dataset, without copying them."""
    try:
        with event.request.DataSet.getbuffer() as view:
            return view.nbytes
    except (AttributeError, ValueError):
        return 0
