"""INT8 calibration inputs: the user's DICOM (files or folders), or synthetic held-out data.

DICOM goes through the same preprocessing as inference: modality LUT, the model's window, resize
to the model's input size. Calibration data should look like what the scanner will send.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.engine.errors import EngineError
from edgeimg.engine.network import heldout_batches, split_item

CALIBRATION_SEED = 1
CALIBRATION_ITEMS = 64


def dicom_files(paths: list[Path]) -> list[Path]:
    """Files named directly, and every file under named folders, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise EngineError(f"calibration path {path} does not exist")
    return files


def _slices(path: Path, spec: Any) -> np.ndarray | None:
    """(frames, 1, H, W) float32 in [0, 1] for one DICOM file; None when it is not an image."""
    import pydicom
    import torch
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    from edgeimg.sdk.datasets import window

    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except (InvalidDicomError, OSError, AttributeError, ValueError):
        return None
    if spec.input.modality_lut:
        pixels = apply_modality_lut(pixels, dataset)
    frames = np.asarray(pixels, np.float32).reshape(-1, *pixels.shape[-2:])
    tensor = torch.from_numpy(np.ascontiguousarray(frames))[:, None]
    resized = torch.nn.functional.interpolate(
        tensor, size=tuple(spec.input.size), mode="bilinear", antialias=True, align_corners=False
    ).numpy()
    return window(resized, spec.input.window_center, spec.input.window_width)


def dicom_inputs(paths: list[Path], spec: Any, limit: int = CALIBRATION_ITEMS) -> np.ndarray:
    """Up to `limit` preprocessed slices from the named DICOM, (N, 1, H, W)."""
    if spec.input.sequence:
        raise EngineError(
            f"DICOM calibration is not supported for sequence model {spec.name!r} yet; "
            "omit --calib to calibrate on synthetic series"
        )
    slices: list[np.ndarray] = []
    for path in dicom_files(paths):
        frames = _slices(path, spec)
        if frames is not None:
            slices.append(frames)
        if sum(len(s) for s in slices) >= limit:
            break
    if not slices:
        raise EngineError(f"no readable DICOM images in {', '.join(map(str, paths))}")
    return np.concatenate(slices)[:limit].astype(np.float32)


def fingerprint(paths: list[Path]) -> str:
    """What the calibration data was, for the cache key: file hashes, or the synthetic seed."""
    if not paths:
        return f"synthetic:{CALIBRATION_SEED}:{CALIBRATION_ITEMS}"
    digest = hashlib.sha256()
    for path in dicom_files(paths):
        digest.update(path.read_bytes())
    return f"dicom:{digest.hexdigest()}"


def calibration_batches(
    impl: Any, paths: list[Path], batch: int
) -> Iterator[tuple[np.ndarray, ...]]:
    """Input batches for the calibrator: the DICOM named, or the synthetic held-out set."""
    if paths:
        images = dicom_inputs(paths, impl.spec)
        for start in range(0, len(images), batch):
            yield (images[start : start + batch],)
        return
    for items in heldout_batches(impl, CALIBRATION_SEED, batch, CALIBRATION_ITEMS):
        yield split_item(impl, items)[0]
