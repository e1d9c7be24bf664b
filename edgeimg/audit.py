"""An append-only audit log: who sent what, what ran on it, where it went — and no PHI.

One JSON object per line. The file is opened with O_APPEND and each line goes out in a single
write() followed by fsync, so lines from threads (and processes) never interleave, a crash loses
at most the line being written, and earlier lines are never rewritten. Fields named like patient
identity are refused outright: an audit trail that leaks names would defeat its purpose; and
exception texts in any field are scrubbed of element values (`edgeimg.privacy.scrub`).
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeimg.privacy import scrub_fields

_PHI_PARTS = ("patient", "birth", "physician", "operatorsname", "accession", "mothers")
_PHI_NAMES = frozenset({"mrn", "ssn", "name", "dob"})


def _identifying(name: str) -> bool:
    """A field named like patient identity: PatientName, patient_id, OtherPatientIDs, mrn, ..."""
    normal = "".join(char for char in name.lower() if char.isalnum())
    return normal in _PHI_NAMES or any(part in normal for part in _PHI_PARTS)


def _identifying_names(fields: Any) -> Iterator[str]:
    """Identifying field names in `fields`, looking inside nested objects and lists too."""
    if isinstance(fields, dict):
        for name, value in fields.items():
            if _identifying(str(name)):
                yield str(name)
            yield from _identifying_names(value)
    elif isinstance(fields, (list, tuple)):
        for value in fields:
            yield from _identifying_names(value)


def _entry(event: str, fields: dict[str, Any]) -> dict[str, Any]:
    if not event or not isinstance(event, str):
        raise ValueError("an audit event needs a name")
    if "time" in fields:
        raise ValueError("`time` is set by the audit log itself")
    refused = sorted(set(_identifying_names(fields)))
    if refused:
        raise ValueError(f"refusing patient-identifying fields in the audit log: {refused}")
    fields = scrub_fields(fields)
    return {"time": datetime.now(timezone.utc).isoformat(), "event": event, **fields}


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=str, ensure_ascii=False) + "\n"


class AuditLog:
    """Append JSON lines to `path`; safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; raises ValueError for a field that could carry patient identity."""
        return self.record_many([(event, fields)])[0]

    def record_many(self, events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Append events in one write and one fsync; all are checked before any is written."""
        entries = [_entry(event, fields) for event, fields in events]
        lines = "".join(_line(entry) for entry in entries).encode()
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"audit log {self.path} is closed")
            written = os.write(self._fd, lines)
            if written != len(lines):
                raise OSError(f"short write to audit log {self.path} ({written} of {len(lines)})")
            os.fsync(self._fd)
        return entries

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The events in `path`, oldest first; a torn last line (crash mid-write) is skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            if line.strip():
                yield json.loads(line)


class AuditWriter:
    """Records events on a background thread, all that queued up in one write and one fsync.

    For high-rate events (one per received instance) that must not wait on the disk: a crash
    can lose what is still queued. Errors go to `on_error` with the events that were not written.
    """

    def __init__(self, on_error: Callable[[Exception, list[dict[str, Any]]], None]) -> None:
        self._on_error = on_error
        self._queue: queue.SimpleQueue[tuple[AuditLog, str, dict[str, Any]] | None]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="edgeimg-audit", daemon=True)
        self._thread.start()

    def record(self, audit: AuditLog, event: str, **fields: Any) -> None:
        self._queue.put((audit, event, fields))

    def close(self) -> None:
        """Write what is queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            items = [item for item in batch if item is not None]
            for audit in dict.fromkeys(item[0] for item in items):
                events = [(event, fields) for log, event, fields in items if log is audit]
                self._write(audit, events)
            if len(items) < len(batch):
                return

    def _write(self, audit: AuditLog, events: list[tuple[str, dict[str, Any]]]) -> None:
        """One write for the batch; one refused event costs a write per event, not the batch."""
        try:
            audit.record_many(events)
            return
        except OSError as error:
            self._on_error(error, [fields for _, fields in events])
            return
        except ValueError:
            pass
        for event, fields in events:
            try:
                audit.record(event, **fields)
            except (OSError, ValueError) as error:
                self._on_error(error, [fields])
