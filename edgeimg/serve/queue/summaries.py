"""What `edgeimg queue`, the live view, the status page and the metrics read: counts and lists."""

from __future__ import annotations

import sqlite3
from typing import Any

from edgeimg.serve.queue.database import Database


class Summaries(Database):
    """Read-only summaries of series, jobs and forwards."""

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

    def forwards_by_destination(self) -> dict[str, dict[str, int]]:
        """Forward counts by destination and state (the status page's destinations)."""
        counts: dict[str, dict[str, int]] = {}
        rows = self._db().execute(
            "SELECT destination, state, COUNT(*) FROM forwards GROUP BY destination, state"
        )
        for destination, state, count in rows:
            counts.setdefault(destination, {})[state] = count
        return counts


def _counts(db: sqlite3.Connection, sql: str, uid: str) -> dict[str, int]:
    return {row[0]: row[1] for row in db.execute(sql, (uid,))}
