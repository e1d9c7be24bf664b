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

from edgeimg.dicom.frames import single_int
from edgeimg.dicom.read import geometry, read_header
from edgeimg.serve.queue import Instance
from edgeimg.serve.routing import SeriesFacts

#: attributes that say how many instances a series will have (the first sane one counts)
EXPECTED_COUNT_KEYWORDS = ("ImagesInAcquisition", "NumberOfSlices")
#: integer attributes a layout keeps as they are (when one sane integer)
_COUNTS = ("SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames")


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
        layout=layout_of(ds),
    )


def layout_of(ds: Dataset) -> str:
    """What ordering a series needs of one instance, as compact JSON: its numbers, size, plane
    orientation, pixel spacing and one position per frame (from classic attributes or the
    functional groups)."""
    geo = geometry(ds)
    layout: dict[str, Any] = {key: single_int(ds.get(key)) for key in _COUNTS if key in ds}
    layout["ImageOrientationPatient"] = geo.orientation
    layout["PixelSpacing"] = geo.pixel_spacing
    layout["ImagePositionPatient"] = geo.positions
    return json.dumps(layout, separators=(",", ":"))


def header_of(row: Mapping[str, Any]) -> Dataset:
    """A header for series grouping (`group_series`, `accepts`), `filename` set to the spool
    path: rebuilt from the row, or read from the file for a row an older edgeimg wrote."""
    if row["layout"] is None:
        header = read_header(row["path"])
        header.filename = row["path"]
        return header
    header = Dataset()
    header.SOPInstanceUID = row["sop_uid"]
    header.SeriesInstanceUID = row["series_uid"]
    header.StudyInstanceUID = row["study_uid"]
    header.SOPClassUID = row["sop_class"]
    if row["modality"]:
        header.Modality = row["modality"]
    if row["body_part"]:
        header.BodyPartExamined = row["body_part"]
    layout = json.loads(row["layout"])
    for keyword in _COUNTS:
        if layout.get(keyword) is not None:
            setattr(header, keyword, layout[keyword])
    _place(header, layout)
    header.filename = row["path"]
    return header


def _place(header: Dataset, layout: dict[str, Any]) -> None:
    """Geometry as `geometry()` will read it back: classic attributes for a single frame,
    functional groups (shared orientation and spacing, a position per frame) for several."""
    orientation = layout.get("ImageOrientationPatient")
    spacing = layout.get("PixelSpacing")
    positions = layout.get("ImagePositionPatient") or []
    if len(positions) <= 1:
        for keyword, value in (
            ("ImageOrientationPatient", orientation),
            ("PixelSpacing", spacing),
            ("ImagePositionPatient", positions[0] if positions else None),
        ):
            if value is not None:
                setattr(header, keyword, list(value))
        return
    shared = Dataset()
    if orientation is not None:
        shared.PlaneOrientationSequence = [_item("ImageOrientationPatient", orientation)]
    if spacing is not None:
        shared.PixelMeasuresSequence = [_item("PixelSpacing", spacing)]
    header.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for position in positions:
        frame = Dataset()
        if position is not None:
            frame.PlanePositionSequence = [_item("ImagePositionPatient", position)]
        frames.append(frame)
    header.PerFrameFunctionalGroupsSequence = frames
    header.NumberOfFrames = len(positions)


def _item(keyword: str, value: Sequence[float]) -> Dataset:
    item = Dataset()
    setattr(item, keyword, list(value))
    return item


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
