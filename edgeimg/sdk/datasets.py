"""Training data for slice models: synthetic phantom slices, or a user's DICOM folder.

Both paths end in the same arrays: windowed images (N, 1, H, W) float32 in [0, 1] at the spec's
input size, plus per-slice lesion masks (N, H, W) uint8 and boxes. Models turn those into their
own targets, so the three slice families share every line of data handling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.errors import InvalidDicomError

from edgeimg.sdk.model import InputSpec

Box = tuple[int, int, int, int]

NEGATIVE_NAMES = ("0", "negative", "absent", "normal", "no")
POSITIVE_NAMES = ("1", "positive", "present", "lesion", "yes")
"""Class folder names for `train --data` on a classifier, compared case-insensitively."""

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


class DataError(ValueError):
    """A data folder that cannot be used for training; the message says what to fix."""


@dataclass
class SliceData:
    """Windowed slices with their lesion ground truth."""

    images: np.ndarray
    masks: np.ndarray
    boxes: list[list[Box]]

    @property
    def labels(self) -> np.ndarray:
        """Slice-level label: does the slice contain lesion pixels."""
        return self.masks.reshape(len(self.masks), -1).any(axis=1)

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: np.ndarray) -> SliceData:
        return SliceData(self.images[index], self.masks[index], [self.boxes[i] for i in index])


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """HU to [0, 1] through a linear window (the preprocessing every slice model uses)."""
    try:
        from edgeimg.dicom.preprocess import window as shared_window
    except ImportError:
        low = center - width / 2
        return np.clip((np.asarray(hu, np.float32) - low) / width, 0.0, 1.0).astype(np.float32)
    return np.asarray(shared_window(hu, center, width), dtype=np.float32)


def synthetic(spec: InputSpec, rng: np.random.Generator, n: int, noise: float = 0.0) -> SliceData:
    """n phantom slices, half with lesions; `noise` is the fraction given low-dose noise."""
    from edgeimg.synth.phantom import make_slices

    size = spec.size[0]
    if spec.size[0] != spec.size[1]:
        raise ValueError(f"synthetic slices are square; input size is {spec.size}")
    hu, masks, boxes = make_slices(rng, n, size=size, positive_fraction=0.5)
    if noise > 0:
        from edgeimg.synth.noise import low_dose

        for index in np.flatnonzero(rng.random(n) < noise):
            hu[index] = low_dose(hu[index], rng, dose_fraction=float(rng.uniform(0.25, 1.0)))
    images = window(hu, spec.window_center, spec.window_width)[:, None]
    return SliceData(images, masks.astype(np.uint8), [list(b) for b in boxes])


def split(data: SliceData, rng: np.random.Generator, validation: float = 0.2) -> tuple:
    """Shuffle and split into (train, validation), keeping at least one item in each."""
    if len(data) < 2:
        raise DataError(f"need at least 2 images to train, found {len(data)}")
    order = rng.permutation(len(data))
    cut = min(max(int(round(len(data) * validation)), 1), len(data) - 1)
    return data.take(order[cut:]), data.take(order[:cut])


def _read(path: Path) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError):
        return None


def _frames_hu(dataset: pydicom.Dataset) -> np.ndarray:
    """Pixel data as (frames, rows, cols) HU: the modality LUT (rescale) applied."""
    from pydicom.pixels import apply_modality_lut

    pixels = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float32)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    return pixels.reshape(frames, *pixels.shape[-2:])


def _resize(array: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize (N, H, W) to the model's input size."""
    if tuple(array.shape[-2:]) == tuple(size):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None]
    resized = F.interpolate(
        tensor,
        size=size,
        mode=mode,
        **({} if mode == "nearest" else {"antialias": True, "align_corners": False}),
    )
    return resized[:, 0].numpy()


def _boxes_of(mask: np.ndarray) -> list[Box]:
    """One box around all lesion pixels of a slice (DICOM SEG carries no instance ids)."""
    if not mask.any():
        return []
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)]


def _images(spec: InputSpec, hu: list[np.ndarray]) -> np.ndarray:
    resized = [_resize(frames, spec.size, "bilinear") for frames in hu]
    return window(np.concatenate(resized), spec.window_center, spec.window_width)[:, None]


def class_folders(data_dir: Path, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from one sub-folder per class (0/1, negative/positive, ...).

    Every readable DICOM file below a class folder counts, multi-frame files frame by frame.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder")
    hu: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    known = {name: 0 for name in NEGATIVE_NAMES} | {name: 1 for name in POSITIVE_NAMES}
    folders = [p for p in sorted(data_dir.iterdir()) if p.is_dir() and p.name.lower() in known]
    if not folders:
        names = "/".join(NEGATIVE_NAMES) + " and " + "/".join(POSITIVE_NAMES)
        raise DataError(f"{data_dir} has no class folders: expected sub-folders named {names}")
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            dataset = _read(path)
            if dataset is None or "PixelData" not in dataset:
                continue
            frames = _frames_hu(dataset)
            hu.append(frames)
            labels.append(np.full(len(frames), known[folder.name.lower()], dtype=np.uint8))
    if not hu:
        raise DataError(f"no DICOM images found in the class folders of {data_dir}")
    found = np.concatenate(labels)
    if found.min() == found.max():
        raise DataError(f"{data_dir} has images of one class only; both classes are needed")
    return _images(spec, hu), found


def _seg_masks(seg: pydicom.Dataset) -> dict[tuple[str, int], np.ndarray]:
    """Union of all segments of a DICOM SEG, keyed by (referenced SOP Instance UID, frame)."""
    pixels = np.asarray(seg.pixel_array)
    pixels = pixels.reshape(-1, *pixels.shape[-2:])
    masks: dict[tuple[str, int], np.ndarray] = {}
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        key = (
            str(source.ReferencedSOPInstanceUID),
            int(getattr(source, "ReferencedFrameNumber", 1) or 1),
        )
        mask = frame > 0
        masks[key] = masks[key] | mask if key in masks else mask
    return masks


def segmentation_folder(data_dir: Path, spec: InputSpec) -> SliceData:
    """Images and lesion masks from a folder of DICOM images plus DICOM SEG objects on them.

    SEG frames are matched to images by referenced SOP Instance UID (and frame number); an image
    that no SEG frame references counts as lesion-free, as SEG usually leaves empty frames out.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder")
    images: dict[str, pydicom.Dataset] = {}
    masks: dict[tuple[str, int], np.ndarray] = {}
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        dataset = _read(path)
        if dataset is None or "PixelData" not in dataset:
            continue
        if str(dataset.SOPClassUID) == SEG_SOP_CLASS:
            masks.update(_seg_masks(dataset))
        else:
            images[str(dataset.SOPInstanceUID)] = dataset
    if not masks:
        raise DataError(f"no DICOM SEG objects found in {data_dir}")
    if not any(uid in images for uid, _ in masks):
        raise DataError(f"the SEG objects in {data_dir} reference none of its images")
    hu: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    for uid, dataset in images.items():
        frames = _frames_hu(dataset)
        empty = np.zeros(frames.shape[-2:], bool)
        hu.append(frames)
        truth.append(np.stack([masks.get((uid, k + 1), empty) for k in range(len(frames))]))
    stacked = _resize(np.concatenate(truth).astype(np.float32), spec.size, "nearest")
    mask_array = (stacked > 0.5).astype(np.uint8)
    return SliceData(_images(spec, hu), mask_array, [_boxes_of(m) for m in mask_array])
