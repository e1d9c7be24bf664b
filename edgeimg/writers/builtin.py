"""The built-in writers (registered in `edgeimg.writers`): typed results to SR, SEG, derived
images and a JSON document. Each is a `(SeriesOutput, out_dir) -> paths` function, exactly what a
third-party writer provides; the DICOM is authored by highdicom in `edgeimg.dicom`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.dicom.preprocess import resize
from edgeimg.durable import atomic_file
from edgeimg.writers import SeriesOutput
from edgeimg.writers.items import Detections, Image, Mask, SeriesFinding, SliceFinding


def write_sr(output: SeriesOutput, out_dir: Path) -> list[Path]:
    """One TID 1500 SR per series: classification findings or detection boxes."""
    from edgeimg.dicom.sr import write_sr as author

    first = output.items[0]
    if isinstance(first, SeriesFinding):
        findings = [
            {"level": "series", "probability": item.probability, "label": item.positive}
            for item in output.items
            if isinstance(item, SeriesFinding)
        ]
    elif isinstance(first, SliceFinding):
        findings = _slice_findings(output)
    else:
        findings = _box_findings(output)
    return [
        author(
            list(output.sources),
            findings,
            **output.identity,
            out_dir=out_dir,
            predecessors=output.predecessors,
            other_evidence=output.other_evidence,
        )
    ]


def _slice_findings(output: SeriesOutput) -> list[dict[str, Any]]:
    """The series-level finding (its most confident slice, named), then one finding per run of
    adjacent positive slices, resting on those slices, with the run's highest probability.

    A lesion spans slices: one group per run says so, and keeps the SR's size (and its cost:
    highdicom builds, copies and re-reads every content item) with the lesions, not the
    slices. Every slice's own probability is in results.jsonl and the JSON document.
    """
    pairs = [
        (frame, item)
        for frame, item in zip(output.frames, output.items, strict=True)
        if isinstance(item, SliceFinding)
    ]
    best_frame, best = max(pairs, key=lambda pair: pair[1].probability)
    findings: list[dict[str, Any]] = [
        {
            "level": "series",
            "probability": best.probability,
            "label": any(item.label for _, item in pairs),
            "sop_instance_uids": [str(best_frame.header.SOPInstanceUID)],
            "frames": [best_frame.number],
        }
    ]
    for run in _runs([item.label for _, item in pairs]):
        members = [pairs[index] for index in run]
        findings.append(
            {
                "sop_instance_uids": [str(frame.header.SOPInstanceUID) for frame, _ in members],
                "frames": [frame.number for frame, _ in members],
                "probability": max(item.probability for _, item in members),
                "label": True,
            }
        )
    return findings


def _runs(labels: list[bool]) -> list[range]:
    """Index ranges of adjacent True values, in order."""
    runs, start = [], None
    for index, label in enumerate([*labels, False]):
        if label and start is None:
            start = index
        elif not label and start is not None:
            runs.append(range(start, index))
            start = None
    return runs


def _box_findings(output: SeriesOutput) -> list[dict[str, Any]]:
    """One finding per slice with boxes, in source pixels; none at all is said on the first."""
    height, width = output.spec.input.size
    findings = []
    for frame, item in zip(output.frames, output.items, strict=True):
        if not isinstance(item, Detections) or not item.boxes:
            continue
        scale = np.array([frame.columns / width, frame.rows / height] * 2)
        boxes = [
            [*(np.asarray(box) * scale).round(1).tolist(), score]
            for box, score in zip(item.boxes, item.scores, strict=True)
        ]
        findings.append({**frame.reference, "boxes": boxes})
    return findings or [{**output.frames[0].reference, "boxes": []}]


def write_seg(output: SeriesOutput, out_dir: Path) -> list[Path]:
    """One SEG with the masks resampled back onto the source geometry."""
    from edgeimg.dicom.seg import resample_mask
    from edgeimg.dicom.seg import write_seg as author

    masks = np.stack(
        [
            resample_mask(item.mask, (frame.rows, frame.columns))
            for frame, item in zip(output.frames, output.items, strict=True)
            if isinstance(item, Mask)
        ]
    )
    return [author(list(output.sources), masks, **output.identity, out_dir=out_dir)]


def write_derived(output: SeriesOutput, out_dir: Path) -> list[Path]:
    """Derived images in HU: the model's [0, 1] window mapped back and resized to the source."""
    from edgeimg.dicom.derived import write_derived as author

    spec_input = output.spec.input
    low = spec_input.window_center - spec_input.window_width / 2
    images = np.stack(
        [
            resize(item.image.astype(np.float32), (frame.rows, frame.columns))
            * spec_input.window_width
            + low
            for frame, item in zip(output.frames, output.items, strict=True)
            if isinstance(item, Image)
        ]
    )
    return author(list(output.sources), images, **output.identity, out_dir=out_dir)


def write_json(output: SeriesOutput, out_dir: Path) -> list[Path]:
    """json/<series UID>.<model>.json: the series' results with the UIDs they rest on, no
    pixels and no patient attributes; the same input gives the same bytes."""
    from edgeimg.preview import safe_uid

    first = output.sources[0]
    document = {
        "model": output.spec.name,
        "model_version": output.spec.version,
        "task": output.spec.task,
        "engine": output.engine_key,
        "study_uid": str(first.StudyInstanceUID),
        "series_uid": str(first.SeriesInstanceUID),
        "sop_instance_uids": [str(source.SOPInstanceUID) for source in output.sources],
        "results": [_jsonable(item) for item in output.items],
    }
    folder = Path(out_dir) / "json"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{safe_uid(first.SeriesInstanceUID)}.{output.spec.name}.json"
    with atomic_file(path, prefix=f".{path.name}.") as stream:
        stream.write(json.dumps(document, sort_keys=True, indent=1).encode() + b"\n")
    return [path]


def _jsonable(item: Any) -> dict[str, Any]:
    """An item's scalar fields (arrays become their summary: a mask's pixel count)."""
    if isinstance(item, Mask):
        return {"pixels": int(np.count_nonzero(item.mask))}
    if isinstance(item, Image):
        return {"anomaly_score": item.anomaly_score} if item.anomaly_score is not None else {}
    if isinstance(item, Detections):
        return {"boxes": [list(box) for box in item.boxes], "scores": list(item.scores)}
    return {key: value for key, value in vars(item).items()}
