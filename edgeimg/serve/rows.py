"""What the queue keeps of each received instance, and the headers the worker rebuilds from it.

At ingest the listener has the dataset in hand, so the row records what routing and series
grouping need (modality, SOP class, body part, and a compact JSON `layout` of the ordering and
geometry attributes; no patient data). The worker then groups and orders a series from its rows
without opening a file; rows from an older spool, without a layout, fall back to the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset

from edgeimg.dicom.read import read_header
from edgeimg.pipeline.layout import grouping_header, layout_of
from edgeimg.serve.queue import Instance
from edgeimg.serve.routing import SeriesFacts

#: attributes that say how many instances a series will have (the first sane one counts)
EXPECTED_COUNT_KEYWORDS = ("ImagesInAcquisition", "NumberOfSlices")


def instance_of(
    ds: Dataset, path: str, size: int, digest: str, calling: str, host: str
) -> Instance:
    """The queue row of a received (already validated) dataset stored at `path`."""
    return Instance(
        sop_uid=str(ds.SOPInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        sop_class=str(ds.SOPClassUID),
        modality=str(ds.get("Modality", "")) or None,
        path=path,
        size=size,
        sha256=digest,
        calling_aet=calling,
        peer_host=host,
        expected=_expected_count(ds),
        body_part=str(ds.get("BodyPartExamined", "") or ""),
        layout=json.dumps(layout_of(ds), separators=(",", ":")),
    )


def header_of(row: Mapping[str, Any]) -> Dataset:
    """A header for series grouping (`group_series`, `accepts`), `filename` set to the spool
    path: rebuilt from the row, or read from the file for a row an older edgeimg wrote."""
    if row["layout"] is None:
        header = read_header(row["path"])
        header.filename = row["path"]
        return header
    identity = {
        "SOPInstanceUID": row["sop_uid"],
        "SeriesInstanceUID": row["series_uid"],
        "StudyInstanceUID": row["study_uid"],
        "SOPClassUID": row["sop_class"],
        "Modality": row["modality"],
        "BodyPartExamined": row["body_part"],
    }
    return grouping_header(identity, json.loads(row["layout"]), row["path"])


def facts_of(rows: Sequence[Mapping[str, Any]]) -> SeriesFacts:
    """What routing needs of a series, from its rows (an older row without a body part reads
    it from the first file's header)."""
    if not rows:
        return SeriesFacts()
    first = rows[0]
    body_part = first["body_part"]
    if body_part is None:
        body_part = str(read_header(first["path"]).get("BodyPartExamined", "") or "")
    return SeriesFacts(
        modality=first["modality"] or "",
        sop_class=first["sop_class"] or "",
        body_part=body_part,
        slices=len(rows),
    )


def _expected_count(ds: Dataset) -> int | None:
    for keyword in EXPECTED_COUNT_KEYWORDS:
        try:
            value = int(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if 0 < value < 100_000:
            return value
    return None
