"""`edgeimg serve`: the DICOM listener, its spool and queue, and the seam to the pipeline.

Events are logged as one JSON object per line on stderr (a readable line on a terminal). They
carry UIDs, AE titles and hosts only: never patient names or IDs; library warnings and
log records come out the same way (`edgeimg.privacy.capture`).
"""

from __future__ import annotations

from typing import Any, Protocol

from edgeimg.privacy import emit


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


def log(event: str, **fields: Any) -> None:
    """One status line on stderr: JSON when not a terminal, `event key=value ...` otherwise.

    Every string field is scrubbed of element values (`edgeimg.privacy.scrub`) on the way.
    """
    emit(event, **fields)
