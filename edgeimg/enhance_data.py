"""Paired low-dose / normal-dose slices for the enhancement models (autoencoder, GAN).

Both plugins train and are judged on the same pairs, so the pairs live in the core once. Images
are windowed to [0, 1] with the model's window, as the core does for DICOM input; noise is added
in HU before windowing, as a scanner would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeimg.datasets import DataError
from edgeimg.implementation import ModelImplementation
from edgeimg.model import InputSpec
from edgeimg.synth import low_dose, make_slices


def window(hu: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HU to [0, 1] through the spec's window."""
    low = spec.window_center - spec.window_width / 2
    return np.clip((hu - low) / spec.window_width, 0.0, 1.0).astype(np.float32)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation of (N, H, W) masks by `steps` pixels (4-neighbourhood), numpy only."""
    grown = mask.copy()
    for _ in range(steps):
        step = grown.copy()
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        step[:, :, 1:] |= grown[:, :, :-1]
        step[:, :, :-1] |= grown[:, :, 1:]
        grown = step
    return grown


def heal(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The same slices without their lesions: lesion pixels take the median of the ring of
    tissue around them. A pseudo-healthy target for learning what the anatomy should be."""
    healed = hu.copy()
    lesion = mask.astype(bool)
    ring = _dilate(lesion, 3) & ~lesion & (hu > -200) & (hu < 300)
    for k in np.flatnonzero(lesion.any(axis=(1, 2))):
        if ring[k].any():
            healed[k][lesion[k]] = np.median(hu[k][ring[k]])
    return healed


class EnhancementPairs(Dataset):
    """Items (noisy, clean, healed, noisy, lesion): images (1, H, W) and a 0/1 lesion flag.

    `count` slices, half with lesions; the noisy input is repeated among the targets so metrics
    can score the input too (`psnr_noisy`).
    """

    def __init__(self, spec: InputSpec, seed: int, count: int, dose_fraction: float = 0.25):
        rng = np.random.default_rng(seed)
        hu, mask, _ = make_slices(rng, count, size=spec.size[0], positive_fraction=0.5)
        self.noisy = torch.from_numpy(window(low_dose(hu, rng, dose_fraction), spec)[:, None])
        self.clean = torch.from_numpy(window(hu, spec)[:, None])
        self.healed = torch.from_numpy(window(heal(hu, mask), spec)[:, None])
        self.lesion = torch.from_numpy(mask.reshape(count, -1).any(axis=1).astype(np.float32))

    def __len__(self) -> int:
        return len(self.lesion)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        noisy = self.noisy[index]
        return noisy, self.clean[index], self.healed[index], noisy, self.lesion[index]


class EnhancementModel(ModelImplementation):
    """What the autoencoder and the GAN share: one windowed slice in, paired synthetic data."""

    train_slices, validation_slices, heldout_slices = 1024, 200, 200

    def example_inputs(self, batch: int = 2) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(0)
        return (rng.random((batch, 1, *self.spec.input.size), dtype=np.float32),)

    def _pairs(self, seed: int, stream: int, count: int) -> EnhancementPairs:
        """Separate seed streams for training, validation and held-out pairs."""
        entropy = np.random.SeedSequence([seed, stream]).generate_state(1)[0]
        return EnhancementPairs(self.spec.input, int(entropy), count)

    def datasets(self, seed: int, data_dir: Path | None = None) -> tuple[EnhancementPairs, ...]:
        if data_dir is not None:
            raise DataError(
                f"{self.spec.name} trains on synthetic low-dose/clean pairs only; drop --data"
            )
        return (
            self._pairs(seed, 1, self.train_slices),
            self._pairs(seed, 2, self.validation_slices),
        )

    def heldout(self, seed: int) -> EnhancementPairs:
        return self._pairs(seed, 3, self.heldout_slices)
