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
    """(frames, channels, H, W) float32 for one file, exactly as `run` and `serve` feed the
    engine (calibrating on inputs preprocessed another way sets the wrong ranges); None when
    it is not a DICOM image."""
    from edgeimg.dicom.read import DicomInputError
    from edgeimg.pipeline.decode import decode_file

    try:
        return decode_file(path, spec, require_uids=False).inputs
    except DicomInputError:
        return None


def dicom_inputs(paths: list[Path], spec: Any, limit: int = CALIBRATION_ITEMS) -> np.ndarray:
    """Up to `limit` preprocessed slices from the named DICOM, (N, C, H, W)."""
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
