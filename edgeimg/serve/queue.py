"""The listener's durable queue (SQLite, WAL, synchronous=FULL).

Rows are committed before a C-STORE success is sent, and every state a crash can interrupt
(`running`) is turned back into `pending` on start, so kill -9 loses nothing acknowledged.
A series that gets new instances after its results were made is reopened as a revision: its
next jobs supersede the last done job of the same model (`jobs.supersedes`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeimg.privacy import scrub

SERIES_STATES = ("received", "complete", "pending", "running", "done", "failed")
"""States in the database; `edgeimg queue` also shows `revised` (done, results superseded)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    modality TEXT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    received_at REAL NOT NULL,
    calling_aet TEXT,
    peer_host TEXT
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series (
    uid TEXT PRIMARY KEY,
    study_uid TEXT,
    modality TEXT,
    state TEXT NOT NULL DEFAULT 'received',
    instances INTEGER NOT NULL DEFAULT 0,
    expected INTEGER,
    last_received REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid TEXT NOT NULL REFERENCES series(uid),
    model TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    outputs TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forwards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER REFERENCES jobs(id),
    destination TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    error TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first spools were written: ALTER TABLE brings an older spool along.
_ADDED_COLUMNS = (
    ("series", "revision", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "supersedes", "INTEGER REFERENCES jobs(id)"),
    ("series", "stale", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "next_try", "REAL NOT NULL DEFAULT 0"),
)
# Whether a series (the row being updated) has results a new one would supersede.
_HAS_RESULT = "EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid = series.uid AND j.state = 'done')"


@dataclass(frozen=True)
class Instance:
    """One received instance as the queue records it."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class: str
    modality: str | None
    path: str
    size: int
    sha256: str
    calling_aet: str
    peer_host: str
    expected: int | None = None


class Queue:
    """Thread-safe access to the queue database: one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._quiet_from = 0.0
        self._db().executescript(_SCHEMA)
        if _missing_columns(self._db()):  # checked first: `edgeimg queue` may only read
            with self._transaction() as db:
                for table, column, declaration in _missing_columns(db):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def has_instance(self, sop_uid: str) -> bool:
        row = self._db().execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,))
        return row.fetchone() is not None

    def add_instance(self, item: Instance) -> tuple[bool, bool]:
        """Record a stored instance; returns (inserted, series now complete by expected count).

        A new instance for a series that was already processed (done/failed) puts it back
        to `received` so the pipeline sees the new data.
        """
        return self.add_instances([item])[0]

    def add_instances(self, items: list[Instance]) -> list[tuple[bool, bool]]:
        """`add_instance` for several instances in one transaction (one WAL fsync for all)."""
        now = time.time()
        with self._transaction() as db:
            return [_add_instance(db, item, now) for item in items]

    def remove_instances(self, sop_uids: list[str]) -> int:
        """Undo rows whose file could not be made durable; returns how many went."""
        with self._transaction() as db:
            return _remove_instances(db, sop_uids)

    def drop_unwritten(self) -> int:
        """Drop rows of series not finished (done/failed) whose file is missing; returns how many.

        The row commit and the file's fsync/rename run side by side, so a crash can leave a
        committed row without its file. No success was sent for it, so the sender sends it again.
        """
        rows = (
            self._db()
            .execute(
                "SELECT i.sop_uid, i.path FROM instances i JOIN series s ON s.uid = i.series_uid"
                " WHERE s.state NOT IN ('done', 'failed')"
            )
            .fetchall()
        )
        missing = [row["sop_uid"] for row in rows if not Path(row["path"]).is_file()]
        return self.remove_instances(missing) if missing else 0

    def complete(self, series_uids: list[str]) -> list[str]:
        """Mark these series complete if they are still `received`; returns those changed."""
        changed = []
        with self._transaction() as db:
            for uid in series_uids:
                cursor = db.execute(
                    "UPDATE series SET state = 'complete', updated = ?"
                    " WHERE uid = ? AND state = 'received'",
                    (time.time(), uid),
                )
                if cursor.rowcount:
                    changed.append(uid)
        return changed

    def quiet_series(self, timeout: float) -> list[str]:
        """Series still `received` with nothing new for `timeout` seconds since `recover`.

        Time spent down is not quiet time: a sender cannot resend to a listener that is not
        there, so a series open at a crash waits the full timeout after the restart.
        """
        since = time.time() - timeout
        if since < self._quiet_from:
            return []
        rows = self._db().execute(
            "SELECT uid FROM series WHERE state = 'received' AND last_received <= ?", (since,)
        )
        return [row["uid"] for row in rows]

    def recover(self) -> int:
        """Re-queue work a crash interrupted (running → pending) and restart the quiet timers of
        open series from now; returns how many rows were re-queued. The listener calls this as
        it starts, just before it binds."""
        now = time.time()
        self._quiet_from = now
        count = 0
        with self._transaction() as db:
            for table in ("series", "jobs", "forwards"):
                cursor = db.execute(
                    f"UPDATE {table} SET state = 'pending', updated = ? WHERE state = 'running'",
                    (now,),
                )
                count += cursor.rowcount
        return count

    def retry(self, ident: str) -> str | None:
        """Re-queue a failed job (`ID` or `job:ID`) or forward (`forward:ID`); returns its kind."""
        kind, _, number = ident.rpartition(":")
        tables = {"job": "jobs", "forward": "forwards"}
        candidates = [tables[kind]] if kind in tables else ["jobs", "forwards"]
        if kind and kind not in tables or not number.isdigit():
            return None
        with self._transaction() as db:
            for table in candidates:
                cursor = db.execute(
                    f"UPDATE {table} SET state = 'pending', error = NULL, updated = ?,"
                    " next_try = 0 WHERE id = ? AND state = 'failed'",
                    (time.time(), int(number)),
                )
                if cursor.rowcount:
                    return table[:-1]
        return None

    def claim_series(self) -> list[str]:
        """Complete series (and pending ones a crash left without jobs) → `pending`, for jobs."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uid FROM series s WHERE state = 'complete' OR (state = 'pending' AND NOT"
                " EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid = s.uid AND j.state IN"
                " ('pending', 'running')))"
            ).fetchall()
            uids = [row["uid"] for row in rows]
            for uid in uids:
                _set_state(db, "series", "uid", uid, "pending", now)
        return uids

    def add_jobs(self, series_uid: str, models: list[str]) -> list[int]:
        """One pending job per model (none twice while one is open); no models → series done.

        A job supersedes the last done job of its model on the series, if there is one.
        """
        now = time.time()
        ids = []
        with self._transaction() as db:
            for model in models:
                open_job = db.execute(
                    "SELECT 1 FROM jobs WHERE series_uid = ? AND model = ? AND state IN"
                    " ('pending', 'running')",
                    (series_uid, model),
                ).fetchone()
                if open_job is None:
                    cursor = db.execute(
                        "INSERT INTO jobs (series_uid, model, updated, supersedes) VALUES"
                        " (?, ?, ?, (SELECT MAX(id) FROM jobs WHERE series_uid = ? AND model = ?"
                        " AND state = 'done'))",
                        (series_uid, model, now, series_uid, model),
                    )
                    ids.append(cursor.lastrowid)
            if not models:
                _set_state(db, "series", "uid", series_uid, "done", now)
        return ids

    def next_job(self) -> dict[str, Any] | None:
        """Claim the oldest pending job that is not waiting: it and its series become
        `running` (and what it waited for is cleared)."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state = 'pending' AND next_try <= ? ORDER BY id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, error = NULL,"
                " updated = ? WHERE id = ?",
                (now, row["id"]),
            )
            _set_state(db, "series", "uid", row["series_uid"], "running", now)
        return {**dict(row), "state": "running", "attempts": row["attempts"] + 1}

    def defer_job(self, job_id: int, reason: str, retry_at: float) -> None:
        """Put a claimed job back to wait for what it needs (a remote engine, a priors source
        that is down): it stays pending, not failed, and `waiting` says what it waits for."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'pending', error = ?, next_try = ?, updated = ?"
                " WHERE id = ?",
                (scrub(reason), retry_at, now, job_id),
            )
            db.execute(
                "UPDATE series SET state = 'pending', updated = ? WHERE uid ="
                " (SELECT series_uid FROM jobs WHERE id = ?)",
                (now, job_id),
            )

    def waiting(self) -> list[dict[str, Any]]:
        """Pending jobs that were put back to wait, with the reason and their next try."""
        rows = self._db().execute(
            "SELECT id, series_uid, model, error AS reason, next_try, attempts FROM jobs"
            " WHERE state = 'pending' AND error IS NOT NULL ORDER BY id"
        )
        return [dict(row) for row in rows]

    def finish_job(
        self,
        job_id: int,
        state: str,
        outputs: list[str] | None = None,
        error: str | None = None,
        inputs: int | None = None,
    ) -> None:
        """Record a job's end; its series is done (or failed) once no job of it is open.

        `inputs` is how many instances the job ran on. If the series held more by then (one
        arrived while the job ran), it is reopened once its jobs end, so that instance is
        processed too (as a revision) instead of being left behind.
        """
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, outputs = ?, error = ?, updated = ? WHERE id = ?",
                (state, json.dumps(outputs or []), error and scrub(error), now, job_id),
            )
            series_uid = db.execute(
                "SELECT series_uid FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()["series_uid"]
            if inputs is not None:
                db.execute(
                    "UPDATE series SET stale = 1 WHERE uid = ? AND instances > ?",
                    (series_uid, inputs),
                )
            states = {
                row[0]
                for row in db.execute("SELECT state FROM jobs WHERE series_uid = ?", (series_uid,))
            }
            if not states & {"pending", "running"}:
                final = "failed" if "failed" in states else "done"
                _set_state(db, "series", "uid", series_uid, final, now)
                db.execute(
                    "UPDATE series SET state = 'received', stale = 0, revision = revision +"
                    f" {_HAS_RESULT} WHERE uid = ? AND stale",
                    (series_uid,),
                )

    def superseded_outputs(self, job: dict[str, Any]) -> list[str]:
        """Output paths of the job that `job` supersedes (none for a first result)."""
        if job.get("supersedes") is None:
            return []
        row = self._db().execute("SELECT outputs FROM jobs WHERE id = ?", (job["supersedes"],))
        outputs = row.fetchone()
        return json.loads(outputs["outputs"] or "[]") if outputs else []

    def series_paths(self, series_uid: str) -> list[str]:
        """Spool paths of a series' instances, in the order they arrived."""
        rows = self._db().execute(
            "SELECT path FROM instances WHERE series_uid = ? ORDER BY received_at, sop_uid",
            (series_uid,),
        )
        return [row["path"] for row in rows]

    def add_forwards(self, job_id: int, destinations: list[str], paths: list[str]) -> None:
        """Queue each output for each destination (once, however often this is called)."""
        now = time.time()
        with self._transaction() as db:
            for destination in destinations:
                for path in paths:
                    exists = db.execute(
                        "SELECT 1 FROM forwards WHERE job_id = ? AND destination = ? AND path = ?",
                        (job_id, destination, path),
                    ).fetchone()
                    if exists is None:
                        db.execute(
                            "INSERT INTO forwards (job_id, destination, path, updated)"
                            " VALUES (?, ?, ?, ?)",
                            (job_id, destination, path, now),
                        )

    def due_forwards(self, now: float) -> list[dict[str, Any]]:
        """Claim pending forwards whose retry time has come (they become `running`)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT * FROM forwards WHERE state = 'pending' AND next_try <= ? ORDER BY id",
                (now,),
            ).fetchall()
            for row in rows:
                _set_state(db, "forwards", "id", row["id"], "running", time.time())
        return [{**dict(row), "state": "running"} for row in rows]

    def finish_forward(
        self, forward_id: int, state: str, error: str | None = None, retry_at: float = 0
    ) -> None:
        """Record one attempt: done, failed for good, or pending again from `retry_at`."""
        with self._transaction() as db:
            db.execute(
                "UPDATE forwards SET state = ?, error = ?, next_try = ?, attempts = attempts + 1,"
                " updated = ? WHERE id = ?",
                (state, error and scrub(error), retry_at, time.time(), forward_id),
            )

    def delivery(self, job_id: int) -> dict[str, Any] | None:
        """A job's model, its series' last arrival and its forwards not yet done (latency)."""
        row = (
            self._db()
            .execute(
                "SELECT j.model, s.last_received, (SELECT COUNT(*) FROM forwards f WHERE"
                " f.job_id = j.id AND f.state != 'done') AS undelivered FROM jobs j JOIN series s"
                " ON s.uid = j.series_uid WHERE j.id = ?",
                (job_id,),
            )
            .fetchone()
        )
        return dict(row) if row else None

    def forwards_by_destination(self) -> dict[str, dict[str, int]]:
        """Forward counts by destination and state (the status page's destinations)."""
        counts: dict[str, dict[str, int]] = {}
        rows = self._db().execute(
            "SELECT destination, state, COUNT(*) FROM forwards GROUP BY destination, state"
        )
        for destination, state, count in rows:
            counts.setdefault(destination, {})[state] = count
        return counts

    def ping(self) -> None:
        """Raise sqlite3.Error unless the database answers a read (readiness probes)."""
        self._db().execute("SELECT 1 FROM series LIMIT 1").fetchall()

    def series_summary(self) -> list[dict[str, Any]]:
        """Every series with its durable instance count and job/forward counts by state.

        A done series whose results were superseded at least once shows as `revised`.
        """
        db = self._db()
        result = []
        for row in db.execute("SELECT * FROM series ORDER BY last_received"):
            item = {
                "series_uid": row["uid"],
                "study_uid": row["study_uid"],
                "modality": row["modality"],
                "instances": db.execute(
                    "SELECT COUNT(*) FROM instances WHERE series_uid = ?", (row["uid"],)
                ).fetchone()[0],
                "expected": row["expected"],
                "state": "revised" if row["state"] == "done" and row["revision"] else row["state"],
                "revision": row["revision"],
                "last_received": row["last_received"],
                "jobs": _counts(
                    db,
                    "SELECT state, COUNT(*) FROM jobs WHERE series_uid = ? GROUP BY state",
                    row["uid"],
                ),
                "forwards": _counts(
                    db,
                    "SELECT f.state, COUNT(*) FROM forwards f JOIN jobs j"
                    " ON f.job_id = j.id WHERE j.series_uid = ? GROUP BY f.state",
                    row["uid"],
                ),
            }
            result.append(item)
        return result

    def totals(self) -> dict[str, Any]:
        """Instances stored, and series, jobs and forwards by state: cheap enough for a live
        view to ask twice a second (no per-series queries)."""
        db = self._db()
        counts = {}
        for table in ("series", "jobs", "forwards"):
            rows = db.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state")
            counts[table] = {row[0]: row[1] for row in rows}
        return {"instances": db.execute("SELECT COUNT(*) FROM instances").fetchone()[0], **counts}

    def failures(self) -> list[dict[str, Any]]:
        """Failed jobs and forwards with their errors, for `edgeimg queue`."""
        db = self._db()
        jobs = db.execute(
            "SELECT 'job' AS kind, id, series_uid AS target, error, attempts"
            " FROM jobs WHERE state = 'failed'"
        )
        forwards = db.execute(
            "SELECT 'forward' AS kind, id, destination AS target, error,"
            " attempts FROM forwards WHERE state = 'failed'"
        )
        return [dict(row) for row in [*jobs, *forwards]]

    def set_config(self, **values: Any) -> None:
        """Store the serve settings (models, forwards, ...) for the pipeline to read."""
        with self._transaction() as db:
            for key, value in values.items():
                db.execute("INSERT OR REPLACE INTO config VALUES (?, ?)", (key, json.dumps(value)))

    def config(self) -> dict[str, Any]:
        rows = self._db().execute("SELECT key, value FROM config")
        return {row["key"]: json.loads(row["value"]) for row in rows}


def _set_state(db: sqlite3.Connection, table: str, key: str, value: Any, state: str, now: float):
    db.execute(f"UPDATE {table} SET state = ?, updated = ? WHERE {key} = ?", (state, now, value))


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    present = {
        (table, row["name"])
        for table in {table for table, _, _ in _ADDED_COLUMNS}
        for row in db.execute(f"PRAGMA table_info({table})")
    }
    return [added for added in _ADDED_COLUMNS if added[:2] not in present]


def _counts(db: sqlite3.Connection, sql: str, uid: str) -> dict[str, int]:
    return {row[0]: row[1] for row in db.execute(sql, (uid,))}


def _add_instance(db: sqlite3.Connection, item: Instance, now: float) -> tuple[bool, bool]:
    cursor = db.execute(
        "INSERT OR IGNORE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            item.sop_uid,
            item.series_uid,
            item.study_uid,
            item.sop_class,
            item.modality,
            item.path,
            item.size,
            item.sha256,
            now,
            item.calling_aet,
            item.peer_host,
        ),
    )
    if cursor.rowcount == 0:
        return False, False
    db.execute(
        "INSERT INTO series (uid, study_uid, modality, instances, expected,"
        " last_received, updated) VALUES (?,?,?,1,?,?,?)"
        " ON CONFLICT(uid) DO UPDATE SET instances = instances + 1,"
        " expected = COALESCE(excluded.expected, expected), last_received = ?,"
        f" updated = ?, revision = revision + (state IN ('done', 'failed') AND {_HAS_RESULT}),"
        " state = CASE WHEN state IN ('done', 'failed') THEN 'received' ELSE state END",
        (item.series_uid, item.study_uid, item.modality, item.expected, now, now, now, now),
    )
    row = db.execute(
        "SELECT state, instances, expected FROM series WHERE uid = ?", (item.series_uid,)
    ).fetchone()
    complete = row["state"] == "received" and bool(
        row["expected"] and row["instances"] >= row["expected"]
    )
    if complete:
        _set_state(db, "series", "uid", item.series_uid, "complete", now)
    return True, complete


def _remove_instances(db: sqlite3.Connection, sop_uids: list[str]) -> int:
    """Delete instance rows and their counts; a series left empty and without jobs goes too."""
    removed = 0
    for uid in sop_uids:
        row = db.execute("DELETE FROM instances WHERE sop_uid = ? RETURNING series_uid", (uid,))
        series = row.fetchone()
        if series is None:
            continue
        removed += 1
        db.execute("UPDATE series SET instances = instances - 1 WHERE uid = ?", (series[0],))
        db.execute(
            "DELETE FROM series WHERE uid = ? AND instances <= 0 AND NOT EXISTS"
            " (SELECT 1 FROM jobs WHERE series_uid = ?)",
            (series[0], series[0]),
        )
    return removed


class GroupCommit:
    """Commits the rows of instances stored by several threads in one transaction.

    Each caller waits for its own row. The first caller while no commit is running takes every
    pending row and commits them; callers arriving meanwhile wait and form the next batch, so
    N associations storing at once share one WAL fsync instead of queueing for N.
    """

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._busy = False

    def add(self, item: Instance) -> tuple[bool, bool]:
        """`Queue.add_instance`, batched; raises what the batch's commit raised."""
        mine = _Pending(item)
        with self._cond:
            self._pending.append(mine)
            while self._busy and not mine.done:
                self._cond.wait()
            if not mine.done:
                self._busy = True
                batch, self._pending = self._pending, []
        if not mine.done:
            try:
                results = self.queue.add_instances([pending.item for pending in batch])
                for pending, result in zip(batch, results, strict=True):
                    pending.result = result
            except BaseException as error:
                for pending in batch:
                    pending.error = error
            finally:
                with self._cond:
                    for pending in batch:
                        pending.done = True
                    self._busy = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result


@dataclass
class _Pending:
    item: Instance
    result: tuple[bool, bool] = (False, False)
    error: BaseException | None = None
    done: bool = False
