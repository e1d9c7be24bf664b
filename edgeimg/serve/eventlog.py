"""The listener's and worker's event lines: one per event, scrubbed of patient data.

Events are logged as one JSON object per line on stderr (a readable line on a terminal). They
carry UIDs, AE titles and hosts only: never patient names or IDs; library warnings and
log records come out the same way (`edgeimg.privacy.capture`).
"""

from __future__ import annotations

from typing import Any

from edgeimg.privacy import emit


def log(event: str, **fields: Any) -> None:
    """One status line on stderr: JSON when not a terminal, `event key=value ...` otherwise.

    Every string field is scrubbed of element values (`edgeimg.privacy.scrub`) on the way.
    """
    emit(event, **fields)
