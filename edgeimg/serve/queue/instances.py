"""Received instances and the series they make: rows committed before a C-STORE success.

A series that gets new instances after its results were made is reopened as a revision.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeimg.serve.queue.database import HAS_RESULT, Database, set_state

#: instance columns in the order `Instance` lists them (received_at is the commit's time)
_COLUMNS = (
    "sop_uid, series_uid, study_uid, sop_class, modality, path, size, sha256, received_at,"
    " calling_aet, peer_host, body_part, layout"
)


@dataclass(frozen=True)
class Instance:
    """One received instance as the queue records it; `body_part` and `layout` (JSON, see
    `edgeimg.serve.rows`) are what routing and series grouping read instead of the file."""

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
    body_part: str | None = None
    layout: str | None = None


class Instances(Database):
    """Instances and series: storing, undoing, completing, and reading back a series."""

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

    def series_paths(self, series_uid: str) -> list[str]:
        """Spool paths of a series' instances, in the order they arrived."""
        rows = self._db().execute(
            "SELECT path FROM instances WHERE series_uid = ? ORDER BY received_at, sop_uid",
            (series_uid,),
        )
        return [row["path"] for row in rows]

    def series_rows(self, series_uid: str) -> list[dict[str, Any]]:
        """A series' instance rows (UIDs, class, modality, body part, layout, path), in the
        order they arrived: what the worker routes and groups the series by."""
        rows = self._db().execute(
            "SELECT sop_uid, series_uid, study_uid, sop_class, modality, body_part, layout, path"
            " FROM instances WHERE series_uid = ? ORDER BY received_at, sop_uid",
            (series_uid,),
        )
        return [dict(row) for row in rows]


def _add_instance(db: sqlite3.Connection, item: Instance, now: float) -> tuple[bool, bool]:
    cursor = db.execute(
        f"INSERT OR IGNORE INTO instances ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
            item.body_part,
            item.layout,
        ),
    )
    if cursor.rowcount == 0:
        return False, False
    db.execute(
        "INSERT INTO series (uid, study_uid, modality, instances, expected,"
        " last_received, updated) VALUES (?,?,?,1,?,?,?)"
        " ON CONFLICT(uid) DO UPDATE SET instances = instances + 1,"
        " expected = COALESCE(excluded.expected, expected), last_received = ?,"
        f" updated = ?, revision = revision + (state IN ('done', 'failed') AND {HAS_RESULT}),"
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
        set_state(db, "series", "uid", item.series_uid, "complete", now)
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

    def __init__(self, queue: Instances) -> None:
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
