"""The live status view of `edgeimg serve` on a terminal (JSON log lines stay for everything else).

Numbers come from read-only queue queries (`Queue.totals`), the listener's AE (established
associations) and the worker's job durations; the last log lines are kept by a `LogTail` that
stands in for stderr while the view is up, so that log lines and the table do not fight over
the screen. The view runs in the main thread's wait loop: no extra thread touches the queue.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edgeimg.serve.queue import Queue

REFRESH_PER_SECOND = 2
_QUEUED = ("complete", "pending")


class LogTail(io.TextIOBase):
    """A stderr stand-in that keeps the last `lines` complete lines for the view."""

    def __init__(self, lines: int = 8) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *done, self._partial = (self._partial + text).split("\n")
            self._lines.extend(line for line in done if line.strip())
        return len(text)

    def isatty(self) -> bool:
        return True  # log() then writes the short readable form, which fits the view

    def writable(self) -> bool:
        return True

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)


def established(listener: Any) -> Callable[[], int]:
    """A counter of the listener's established associations (idle sockets do not count)."""

    def count() -> int:
        ae = getattr(listener, "ae", None)
        associations = getattr(ae, "active_associations", None) or []
        return sum(1 for assoc in associations if assoc.is_established)

    return count


class StatusView:
    """Renders what `edgeimg serve` is doing; `render()` is called about twice a second."""

    def __init__(
        self,
        queue: Queue,
        *,
        title: str = "edgeimg serve",
        associations: Callable[[], int] = lambda: 0,
        latency: Callable[[], dict[str, dict[str, float]]] = dict,
        tail: LogTail | None = None,
    ) -> None:
        self.queue = queue
        self.title = title
        self.associations = associations
        self.latency = latency
        self.tail = tail
        self.started = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        """The numbers the view shows, as one dict (what `render` draws)."""
        totals = self.queue.totals()
        series = totals["series"]
        return {
            "associations": self.associations(),
            "instances": totals["instances"],
            "series": {
                "received": series.get("received", 0),
                "queued": sum(series.get(state, 0) for state in _QUEUED),
                "running": series.get("running", 0),
                "done": series.get("done", 0),
                "failed": series.get("failed", 0),
            },
            "jobs": totals["jobs"],
            "forwards": totals["forwards"],
            "latency": self.latency(),
        }

    def render(self) -> RenderableType:
        numbers = self.snapshot()
        uptime = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.started))
        counts = Table.grid(padding=(0, 2))
        counts.add_row("associations", str(numbers["associations"]))
        counts.add_row("instances", f"{numbers['instances']} received")
        counts.add_row("series", _states(numbers["series"]))
        counts.add_row("jobs", _states(numbers["jobs"]) or "none yet")
        counts.add_row("forwards", _states(numbers["forwards"]) or "none yet")
        parts: list[RenderableType] = [counts]
        if numbers["latency"]:
            latency = Table(box=None, padding=(0, 2), show_edge=False)
            for column in ("model", "jobs", "p50 s", "p95 s"):
                latency.add_column(column, justify="left" if column == "model" else "right")
            for model, stats in sorted(numbers["latency"].items()):
                latency.add_row(
                    escape(model), str(stats["jobs"]), f"{stats['p50']:.2f}", f"{stats['p95']:.2f}"
                )
            parts.append(latency)
        if self.tail is not None:
            parts.append(
                Text("\n".join(self.tail.lines()), style="dim", overflow="ellipsis", no_wrap=True)
            )
        return Panel(Group(*parts), title=f"{escape(self.title)}  up {uptime}", expand=True)


def _states(counts: dict[str, int]) -> str:
    return "  ".join(f"{state} {count}" for state, count in counts.items())
