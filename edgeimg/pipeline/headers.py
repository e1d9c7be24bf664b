"""From paths to series a model will run on: read headers, group and order series, decide.

Headers are read once, here (in the worker pool when there is one), and cut down to what
grouping needs (`edgeimg.pipeline.layout`); everything after works from the `Series` this
makes, so nothing downstream reads a header again to order or check.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from edgeimg.dicom.frames import frame_count
from edgeimg.dicom.read import DicomInputError, read_header
from edgeimg.dicom.series import Series, group_series
from edgeimg.files import dicom_files
from edgeimg.pipeline.decode import in_chunks
from edgeimg.pipeline.layout import grouping_header, identity_of, layout_of
from edgeimg.privacy import scrub
from edgeimg.sdk.model import ModelSpec


@dataclass
class SeriesJob:
    """One series as the model will see it, or why it will not."""

    series: Series
    paths: list[Path]
    skip: str | None = None


@dataclass
class Scan:
    """What a set of paths holds: series to run, files that could not be read or were passed
    over, and files that repeat an instance already found (same SOP Instance UID)."""

    jobs: list[SeriesJob] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0

    def describe(self) -> str:
        """What was scanned and found, in one line (for a run with nothing to do)."""
        found = sum(len(job.paths) for job in self.jobs)
        return (
            f"scanned {self.files} file(s): {found} DICOM image(s) in {len(self.jobs)} series, "
            f"{len(self.skipped)} not DICOM, {len(self.errors)} unreadable, "
            f"{len(self.duplicates)} duplicate(s)"
        )


def accepts(spec: ModelSpec, series: Series, headers: Sequence[Dataset]) -> str | None:
    """Why the model does not take this series, or None when it does."""
    modality = series.modality or "?"
    if spec.modalities and modality not in spec.modalities:
        return f"modality {modality} is not one the model takes ({', '.join(spec.modalities)})"
    classes = {str(header.get("SOPClassUID", "")) for header in headers}
    unsupported = sorted(classes - set(spec.sop_classes))
    if spec.sop_classes and unsupported:
        return f"SOP class {unsupported[0]} is not one the model takes"
    slices = sum(frame_count(header) for header in headers)
    if spec.input.sequence and slices < spec.input.min_length:
        return f"{slices} slices; the model needs at least {spec.input.min_length}"
    return None


def series_jobs(headers: Sequence[Dataset], spec: ModelSpec) -> list[SeriesJob]:
    """Headers (each with its `filename`) grouped into ordered series, each judged for `spec`."""
    jobs = []
    for series in group_series(headers):
        members = list(series.instances)
        job = SeriesJob(series, [Path(header.filename) for header in members])
        job.skip = accepts(spec, series, members)
        jobs.append(job)
    return jobs


def scan(paths: Sequence[Path], spec: ModelSpec, pool: Executor | None = None) -> Scan:
    """Read headers (in `pool` when given), group series, and decide per series whether the
    model takes it."""
    result = Scan()
    headers: list[Dataset] = []
    files, passed_over = dicom_files(paths)
    result.files = len(files) + len(passed_over)
    for path in passed_over:
        result.skipped.append(
            {"status": "skipped", "file": str(path), "reason": "not a DICOM file"}
        )
    first: dict[str, str] = {}
    for path, read in zip(files, in_chunks(_layout_or_error, files, pool), strict=True):
        if isinstance(read, DicomInputError):
            result.errors.append({"status": "error", "file": str(path), "error": scrub(read)})
            continue
        header = grouping_header(*read, str(path))
        uid = str(header.SOPInstanceUID)
        if uid in first:
            reason = f"same SOP Instance UID as {first[uid]}; only that file is run"
            result.duplicates.append(
                {
                    "status": "duplicate",
                    "file": str(path),
                    "sop_instance_uid": uid,
                    "duplicate_of": first[uid],
                    "reason": reason,
                }
            )
            continue
        first[uid] = str(path)
        header.filename = str(path)
        headers.append(header)
    result.jobs = series_jobs(headers, spec)
    return result


def _layout_or_error(path: Path) -> tuple[dict, dict] | DicomInputError:
    """What grouping needs of one file's header, as plain values: cheap to send from a worker
    (a pydicom Dataset cost as much to unpickle as to build), made a header again by the
    caller, who is idle while the workers read."""
    try:
        header = read_header(path)
    except DicomInputError as error:
        return error
    return identity_of(header), layout_of(header)
