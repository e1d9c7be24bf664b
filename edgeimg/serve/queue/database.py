"""The queue database itself: schema, the migration of older spools, connections, config.

One connection per thread (SQLite, WAL, synchronous=FULL). Columns added after the first spools
were written are added on open, so a spool written by an older edgeimg keeps working.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    # what routing and series grouping need of an instance (edgeimg.serve.rows)
    ("instances", "body_part", "TEXT"),
    ("instances", "layout", "TEXT"),
)
# Whether a series (the row being updated) has results a new one would supersede.
HAS_RESULT = "EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid = series.uid AND j.state = 'done')"


class Database:
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

    def ping(self) -> None:
        """Raise sqlite3.Error unless the database answers a read (readiness probes)."""
        self._db().execute("SELECT 1 FROM series LIMIT 1").fetchall()

    def set_config(self, **values: Any) -> None:
        """Store the serve settings (models, forwards, ...) for the pipeline to read."""
        with self._transaction() as db:
            for key, value in values.items():
                db.execute("INSERT OR REPLACE INTO config VALUES (?, ?)", (key, json.dumps(value)))

    def config(self) -> dict[str, Any]:
        rows = self._db().execute("SELECT key, value FROM config")
        return {row["key"]: json.loads(row["value"]) for row in rows}


def set_state(db: sqlite3.Connection, table: str, key: str, value: Any, state: str, now: float):
    db.execute(f"UPDATE {table} SET state = ?, updated = ? WHERE {key} = ?", (state, now, value))


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    present = {
        (table, row["name"])
        for table in {table for table, _, _ in _ADDED_COLUMNS}
        for row in db.execute(f"PRAGMA table_info({table})")
    }
    return [added for added in _ADDED_COLUMNS if added[:2] not in present]
