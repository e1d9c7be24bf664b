"""The DICOM listener: a pynetdicom AE that stores what scanners send, durably, then says so.

What it needs from pynetdicom beyond the public API (a gate that keeps connections without an
A-ASSOCIATE-RQ out of the association slots, PDU length checks, event-driven reactor threads,
fast C-STORE responses) is in `edgeimg.serve.pynetdicom_adapter`, the one module allowed to
touch pynetdicom's internals.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import ssl
import struct
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts, evt
from pynetdicom.events import Event

from edgeimg.audit import AuditWriter
from edgeimg.dicom.filemeta import file_meta
from edgeimg.dicom.read import PIXEL_KEYWORDS, DicomInputError, check_dataset
from edgeimg.net import Peer
from edgeimg.serve import NoPipeline, Pipeline, log
from edgeimg.serve import pynetdicom_adapter as adapter
from edgeimg.serve.gate import ARTIM, PENDING_PER_HOST, PENDING_TOTAL, Pending
from edgeimg.serve.metrics import ServeMetrics
from edgeimg.serve.queue import GroupCommit, Instance, Queue
from edgeimg.serve.rows import instance_of
from edgeimg.serve.security import AllowEntry, is_allowed
from edgeimg.serve.spool import DiskFull, Spool, Staged

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still sent by old scanners)
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
]
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
UID_KEYWORDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
#: the largest P-DATA PDU we accept: a sender that uses it sends a 512 x 512 CT slice in one PDU
#: rather than eight, and pynetdicom spends less per instance on each PDU it reads
MAX_PDU = 1 << 20
_LOCK_STRIPES = 64


class Rejected(Exception):
    """A received instance we answer with a failure status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ServeConfig:
    """Everything `edgeimg serve` needs; the pipeline reads `models` and `forwards`."""

    aet: str
    port: int = 11112
    host: str = "0.0.0.0"
    spool: Path = Path("spool")
    models: list[str] = field(default_factory=list)
    forwards: list[Peer | str] = field(default_factory=list)
    allow: list[AllowEntry] = field(default_factory=list)
    series_timeout: float = 10
    complete_on_release: bool = False
    max_associations: int = 8
    min_free_mb: float = 512
    tls: ssl.SSLContext | None = None
    acse_timeout: float = 30
    dimse_timeout: float = 60
    network_timeout: float = 60
    max_pdu: int = MAX_PDU
    #: seconds a connection has to send its A-ASSOCIATE-RQ before it is closed
    artim: float = ARTIM
    #: connections without an A-ASSOCIATE-RQ yet, from one host and in all (edgeimg.serve.gate)
    pending_per_host: int = PENDING_PER_HOST
    pending_total: int = PENDING_TOTAL


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
        self.ae = self._make_ae()

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

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.config.aet)
        ae.require_called_aet = True
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = self.config.max_pdu
        ae.acse_timeout = self.config.acse_timeout
        ae.dimse_timeout = self.config.dimse_timeout
        ae.network_timeout = self.config.network_timeout
        ae.add_supported_context(VERIFICATION)
        classes = {cx.abstract_syntax for cx in AllStoragePresentationContexts}
        classes |= {cx.abstract_syntax for cx in StoragePresentationContexts}
        for sop_class in sorted(classes):
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        return ae

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
        refusal = _refusal(request) if allowed else (3, "not allowed")
        if refusal:
            log("association_rejected", calling_aet=calling, host=host, reason=refusal[1])
            self.metrics.association(refused=refusal[1])
            adapter.reject(event.assoc, refusal[0])
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
        return _status(code, comment)

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
            raise _write_refused(error) from None
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
            raise _write_refused(error) from None
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


def framing_error(raw: bytes, syntax: UID) -> str | None:
    """Why the element headers of an encoded dataset do not tile it exactly, or None.

    pydicom reads an element whose value runs past the end without complaint (it just returns
    fewer bytes), so a truncated instance would pass as valid without this check.
    """
    if syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw)
        except zlib.error:
            return "deflated dataset cannot be inflated"
        if not inflater.eof:
            return "deflated dataset is cut short"
    walker = _Walker(raw, syntax.is_implicit_VR, "<" if syntax.is_little_endian else ">")
    try:
        walker.elements(0, until=None)
    except ValueError as error:
        return str(error)
    except RecursionError:
        return "sequences nested too deeply"
    return None


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US"
_VRS = _LONG_VRS | frozenset(_SHORT_VRS.split())


class _Walker:
    """Follows element, item and delimiter headers without decoding any value."""

    def __init__(self, data: bytes, implicit: bool, order: str) -> None:
        self.data, self.implicit, self.order = data, implicit, order

    def _unpack(self, fmt: str, pos: int) -> tuple:
        if pos + struct.calcsize(self.order + fmt) > len(self.data):
            raise ValueError(f"dataset is cut short in an element header at byte {pos}")
        return struct.unpack_from(self.order + fmt, self.data, pos)

    def _header(self, pos: int) -> tuple[int, int, int]:
        group, element = self._unpack("HH", pos)
        tag = group << 16 | element
        if group == 0xFFFE or self.implicit:
            return tag, self._unpack("L", pos + 4)[0], pos + 8
        vr = self.data[pos + 4 : pos + 6]
        if vr not in _VRS:
            raise ValueError(f"invalid VR {bytes(vr)!r} at byte {pos + 4}")
        if vr in _LONG_VRS:
            return tag, self._unpack("L", pos + 8)[0], pos + 12
        return tag, self._unpack("H", pos + 6)[0], pos + 8

    def _skip(self, tag: int, length: int, pos: int) -> int:
        if pos + length > len(self.data):
            raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is cut short")
        return pos + length

    def elements(self, pos: int, until: int | None) -> int:
        while pos < len(self.data):
            tag, length, pos = self._header(pos)
            if tag == until:
                return pos
            if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
                raise ValueError(f"unexpected item or delimiter at byte {pos - 8}")
            pos = self.items(pos) if length == _UNDEFINED else self._skip(tag, length, pos)
        if until is not None:
            raise ValueError("dataset ends inside a sequence item")
        return pos

    def items(self, pos: int) -> int:
        while True:
            tag, length, pos = self._header(pos)
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise ValueError(f"expected a sequence item at byte {pos - 8}")
            if length == _UNDEFINED:
                pos = self.elements(pos, until=_ITEM_END)
            else:
                pos = self._skip(tag, length, pos)


def _refusal(request: Any) -> tuple[int, str] | None:
    """PS3.8 rejections pynetdicom does not make itself: (reason, why), or None to go on."""
    if str(request.application_context_name) != APPLICATION_CONTEXT:
        return 2, "application context name not supported"
    if not request.presentation_context_definition_list:
        return 1, "no presentation contexts"
    return None


def _decoded(event: Event, raw: bytes, syntax: UID) -> Dataset:
    """The received dataset (`raw`), decoded lazily; C000 if its framing is broken."""
    problem = framing_error(raw, syntax)
    if problem:
        raise Rejected(CANNOT_UNDERSTAND, problem)
    try:
        ds = event.dataset
    except Exception:
        raise Rejected(CANNOT_UNDERSTAND, "dataset cannot be decoded") from None
    ds.file_meta = _file_meta_of(syntax)
    return ds


def _write_refused(error: OSError) -> Rejected:
    """The A700 that a full or failing disk earns."""
    if isinstance(error, DiskFull):
        return Rejected(OUT_OF_RESOURCES, str(error))
    return Rejected(OUT_OF_RESOURCES, f"cannot write: {error.strerror}")


class _Checks:
    """Decoding, checking and hashing one received dataset on the publisher threads.

    `start` submits them (the listener calls it while the data syncs); `wait` starts them if a
    failed write came first, and raises `Rejected` for refused data.
    """

    dataset: Dataset
    series_uid: str

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        event: Event,
        raw: bytes,
        syntax: UID,
        sop_class: str,
        sop_uid: str,
        header: bytes,
    ) -> None:
        self._pool = pool
        self._check_args = (event, raw, syntax, sop_class, sop_uid)
        self._hash_args = (header, raw)
        self._checked: Future | None = None
        self._hashed: Future

    def start(self) -> None:
        self._checked = self._pool.submit(_checked, *self._check_args)
        self._hashed = self._pool.submit(_sha256, *self._hash_args)

    def wait(self) -> None:
        if self._checked is None:
            self.start()
        self.dataset, self.series_uid = self._checked.result()

    def sha256(self) -> str:
        """The digest; only after `wait`, which has started the hashing."""
        return self._hashed.result()


def _checked(
    event: Event, raw: bytes, syntax: UID, sop_class: str, sop_uid: str
) -> tuple[Dataset, str]:
    """The decoded dataset and its series UID (valid: `validate` checked it), or `Rejected`."""
    ds = _decoded(event, raw, syntax)
    validate(ds, sop_class, sop_uid)
    return ds, str(ds.SeriesInstanceUID)


def _sha256(*chunks: bytes) -> str:
    """Hex digest of `chunks`; hashlib drops the GIL, so this runs beside the checks."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _file_meta_of(syntax: str) -> FileMetaDataset:
    """What validation reads from the file meta of a received dataset: its transfer syntax."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    return meta


def _in_flight(server: Any) -> list:
    """Associations that may be mid-transfer (idle connections without a request don't count)."""
    return [assoc for assoc in server.active_associations if assoc.is_established]


def validate(ds: Dataset, sop_class: str, sop_uid: str) -> None:
    """Refuse what the pipeline could not trust.

    A900 when the dataset contradicts its command or its IOD (class or instance UID differ,
    invalid UIDs, pixel data that does not fit the geometry); C000 when it cannot be read at all.
    """
    try:
        if str(ds.get("SOPClassUID", "")) != sop_class:
            raise Rejected(DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the command")
        if str(ds.get("SOPInstanceUID", "")) != sop_uid:
            raise Rejected(DOES_NOT_MATCH_SOP_CLASS, "SOP Instance UID differs from the command")
        for keyword in UID_KEYWORDS:
            value = ds.get(keyword)
            if not isinstance(value, str) or not UID(value).is_valid:
                raise Rejected(DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is not a valid UID")
        if any(keyword in ds for keyword in PIXEL_KEYWORDS):
            check_dataset(ds, sop_uid)
    except Rejected:
        raise
    except DicomInputError as error:
        raise Rejected(DOES_NOT_MATCH_SOP_CLASS, error.reason) from None
    except Exception:
        raise Rejected(CANNOT_UNDERSTAND, "dataset cannot be decoded") from None


def _dataset_size(event: Event) -> int:
    """Bytes of the received dataset, without copying them."""
    try:
        with event.request.DataSet.getbuffer() as view:
            return view.nbytes
    except (AttributeError, ValueError):
        return 0


def _status(code: int, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]
    return status
