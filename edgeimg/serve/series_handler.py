"""What the listener hands a complete series to: the model/forward pipeline, or nothing."""

from __future__ import annotations

from typing import Protocol


class Pipeline(Protocol):
    """What serve calls when a series is complete; the model/forward pipeline implements it.

    Called from listener threads after the series row says `complete`: it must return quickly
    (hand the UID to a worker) and may raise without harming the listener.
    """

    def on_series_complete(self, series_uid: str) -> None: ...


class NoPipeline:
    """The default: series are marked complete in the queue and nothing else happens."""

    def on_series_complete(self, series_uid: str) -> None:
        return None
