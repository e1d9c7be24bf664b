"""Segmentation masks as a DICOM SEG (highdicom, BINARY), on the geometry of the sources.

The model's labels become segments: mask value n (1-based) is segment n, `model.labels[n-1]`.
Masks must already be at source geometry; `resample_mask` does the nearest-neighbour step for a
model that works at a smaller size.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from edgeimg.dicom.write import MANUFACTURER, check_sources, prepare, save
from edgeimg.model import ModelSpec

# The model's label codes name what was segmented; this names the kind of thing it is.
CATEGORY = codes.SCT.MorphologicallyAbnormalStructure


def resample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes of `mask` to `shape` (labels stay labels)."""
    rows, cols = shape
    if rows < 1 or cols < 1:
        raise ValueError(f"target shape must be positive, got {shape}")
    in_rows, in_cols = mask.shape[-2:]
    row_index = ((np.arange(rows) + 0.5) * in_rows / rows).astype(np.intp)
    col_index = ((np.arange(cols) + 0.5) * in_cols / cols).astype(np.intp)
    return mask[..., row_index[:, None], col_index[None, :]]


def write_seg(
    sources: list[Dataset],
    masks: np.ndarray,
    *,
    model: ModelSpec,
    engine_key: str,
    out_dir: Path,
) -> Path:
    """Write `masks` (K, R, C) as one SEG in a new series; return its path.

    Mask k lies on source frame k: `sources[k]` for single-frame images, or frame k + 1 of a
    single multi-frame source (enhanced CT).
    """
    sources = check_sources(sources, one_series=True)
    masks = _checked(masks, sources, len(model.labels))
    output = prepare("seg", "SEG", sources, model, engine_key)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(model),
        series_instance_uid=output.uids.series,
        series_number=output.series_number,
        sop_instance_uid=output.uids.instance(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=output.model_name,
        software_versions=output.software_versions,
        device_serial_number=output.device_serial_number,
        series_description=output.series_description,
    )
    return save(seg, out_dir)


def _checked(masks: np.ndarray, sources: list[Dataset], segments: int) -> np.ndarray:
    """Masks must match the sources one to one and use only the model's label values."""
    masks = np.asarray(masks)
    frames = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for ds in sources)
    expected = (frames, int(sources[0].Rows), int(sources[0].Columns))
    if masks.shape != expected:
        raise ValueError(
            f"masks have shape {masks.shape}, sources need {expected}; "
            "resample with resample_mask first"
        )
    if masks.size and (masks.min() < 0 or masks.max() > segments):
        raise ValueError(f"mask values must lie in 0..{segments} (0 is background)")
    return masks.astype(np.uint8)


def _segments(model: ModelSpec) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name, family=codes.cid7162.ArtificialIntelligence, version=model.version
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label.meaning[:64],
            segmented_property_category=CATEGORY,
            segmented_property_type=hd.sr.CodedConcept(label.value, label.scheme, label.meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, label in enumerate(model.labels, start=1)
    ]
