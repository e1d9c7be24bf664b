"""Jobs (one per series and routed model) and the forwards of their outputs.

Every state a crash can interrupt (`running`) is turned back into `pending` on start. A job on
a reopened series supersedes the last done job of the same model (`jobs.supersedes`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from edgeimg.privacy import scrub
from edgeimg.serve.queue.database import HAS_RESULT, Database, set_state


class Jobs(Database):
    """Claiming series, running jobs, and queueing, claiming and finishing forwards."""

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
                set_state(db, "series", "uid", uid, "pending", now)
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
                set_state(db, "series", "uid", series_uid, "done", now)
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
            set_state(db, "series", "uid", row["series_uid"], "running", now)
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
                set_state(db, "series", "uid", series_uid, final, now)
                db.execute(
                    "UPDATE series SET state = 'received', stale = 0, revision = revision +"
                    f" {HAS_RESULT} WHERE uid = ? AND stale",
                    (series_uid,),
                )

    def superseded_outputs(self, job: dict[str, Any]) -> list[str]:
        """Output paths of the job that `job` supersedes (none for a first result)."""
        if job.get("supersedes") is None:
            return []
        row = self._db().execute("SELECT outputs FROM jobs WHERE id = ?", (job["supersedes"],))
        outputs = row.fetchone()
        return json.loads(outputs["outputs"] or "[]") if outputs else []

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
                set_state(db, "forwards", "id", row["id"], "running", time.time())
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
