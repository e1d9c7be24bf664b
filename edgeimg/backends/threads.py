"""How many threads a CPU engine may use: all physical cores, unless its caller shares them.

`run` decodes and writes in worker processes on the same cores as the engine. An engine with
one spinning intra-op thread per core then fights those workers for the CPU (on 2 cores its
calls took 2.5 times their standalone CPU), so `run` opens its engine inside `sharing_cores`:
the CPU backends take the budget it names and do not spin. Elsewhere (`bench`, `serve`, the
race) nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from edgeimg.backends.base import physical_cores


@dataclass(frozen=True)
class ThreadBudget:
    """Intra-op threads for an engine, and whether they may spin waiting for work."""

    threads: int
    spin: bool


_shared: ContextVar[int | None] = ContextVar("edgeimg_engine_threads", default=None)


@contextmanager
def sharing_cores(threads: int | None) -> Iterator[None]:
    """Engines opened inside use at most `threads` threads and never spin (None: unshared)."""
    token = _shared.set(None if threads is None else max(1, threads))
    try:
        yield
    finally:
        _shared.reset(token)


def thread_budget() -> ThreadBudget:
    """The budget for an engine opened now: every physical core, spinning, unless shared."""
    cores = physical_cores()
    shared = _shared.get()
    if shared is None:
        return ThreadBudget(cores, spin=True)
    return ThreadBudget(min(cores, shared), spin=False)
