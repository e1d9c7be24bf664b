"""A job on a series that grew after its results were made supersedes the job before it: the
new SR names the old one (Predecessor Documents), so the worker needs the old outputs' headers."""

from __future__ import annotations

from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from edgeimg.serve.eventlog import log
from edgeimg.serve.queue import Queue


def superseded_headers(queue: Queue, job: dict[str, Any]) -> list[Dataset]:
    """Headers of the results `job` supersedes; one whose file is gone is logged and left out
    (the new result is still made, it just cannot name that one)."""
    headers = []
    for path in queue.superseded_outputs(job):
        try:
            headers.append(dcmread(path, stop_before_pixels=True))
        except OSError as error:
            log("predecessor_unreadable", job=job["id"], error=type(error).__name__)
    return headers
