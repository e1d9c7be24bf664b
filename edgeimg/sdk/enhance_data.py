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

from edgeimg.sdk.datasets import DataError
from edgeimg.sdk.implementation import ModelImplementation
from edgeimg.sdk.model import InputSpec
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


#: slices generated at once: bounds memory when full-resolution slices are cut into patches
_CHUNK = 32
#: clean HU above which a pixel is inside the body (air is -1000, fat -100)
_BODY_HU = -500.0


def _corners(
    rng: np.random.Generator, hu: np.ndarray, mask: np.ndarray, patch: int, count: int
) -> np.ndarray:
    """Top-left corners of `count` patches of one slice, (count, 2) as (row, column).

    Patches centre on the body (denoising has nothing to do in air); on a slice with a lesion,
    half of them centre on lesion pixels, so the healthy reconstruction sees enough lesions.
    """
    body = np.argwhere(hu > _BODY_HU)
    lesion = np.argwhere(mask > 0)
    on_lesion = count // 2 if len(lesion) else 0
    centres = np.concatenate(
        [
            lesion[rng.integers(0, len(lesion), on_lesion)] if on_lesion else body[:0],
            body[rng.integers(0, len(body), count - on_lesion)],
        ]
    )
    limit = np.array(hu.shape) - patch
    return np.clip(centres - patch // 2, 0, limit)


class EnhancementPairs(Dataset):
    """Items (noisy, clean, healed, noisy, lesion): images (1, H, W) and a 0/1 lesion flag.

    `count` slices at the spec's (native) size, half with lesions; the noisy input is repeated
    among the targets so metrics can score the input too (`psnr_noisy`). With `patch`, each
    slice gives `per_slice` random patch x patch crops instead (training): noise is simulated
    on the whole slice first, since it depends on the path lengths through the patient.
    """

    def __init__(
        self,
        spec: InputSpec,
        seed: int,
        count: int,
        dose_fraction: float = 0.25,
        *,
        patch: int | None = None,
        per_slice: int = 8,
    ):
        rng = np.random.default_rng(seed)
        parts: list[tuple[np.ndarray, ...]] = []
        for start in range(0, count, _CHUNK):
            chunk = min(_CHUNK, count - start)
            hu, mask, _ = make_slices(rng, chunk, size=spec.size[0], positive_fraction=0.5)
            noisy = low_dose(hu, rng, dose_fraction)
            images = (window(noisy, spec), window(hu, spec), window(heal(hu, mask), spec), mask)
            if patch is not None:
                images = self._crop(rng, hu, mask, images, patch, per_slice)
            parts.append(images)
        noisy, clean, healed, mask = (np.concatenate(part) for part in zip(*parts, strict=True))
        self.noisy = torch.from_numpy(noisy[:, None])
        self.clean = torch.from_numpy(clean[:, None])
        self.healed = torch.from_numpy(healed[:, None])
        self.lesion = torch.from_numpy(mask.reshape(len(mask), -1).any(axis=1).astype(np.float32))

    @staticmethod
    def _crop(
        rng: np.random.Generator,
        hu: np.ndarray,
        mask: np.ndarray,
        images: tuple[np.ndarray, ...],
        patch: int,
        per_slice: int,
    ) -> tuple[np.ndarray, ...]:
        crops: list[list[np.ndarray]] = [[] for _ in images]
        for k in range(len(hu)):
            for row, column in _corners(rng, hu[k], mask[k], patch, per_slice):
                for out, image in zip(crops, images, strict=True):
                    out.append(image[k, row : row + patch, column : column + patch])
        return tuple(np.stack(out) for out in crops)

    def __len__(self) -> int:
        return len(self.lesion)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        noisy = self.noisy[index]
        return noisy, self.clean[index], self.healed[index], noisy, self.lesion[index]


class EnhancementModel(ModelImplementation):
    """What the autoencoder and the GAN share: one windowed slice in, paired synthetic data.

    Both work at native resolution and are fully convolutional: they train on random patches
    cut from full-size slices and are validated and evaluated on whole slices.
    """

    train_slices, validation_slices, heldout_slices = 512, 32, 96
    #: side of the square training patches, and patches cut from each training slice
    patch, patches_per_slice = 96, 8

    def example_inputs(self, batch: int = 2) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(0)
        return (rng.random((batch, 1, *self.spec.input.size), dtype=np.float32),)

    def _pairs(
        self, seed: int, stream: int, count: int, patch: int | None = None
    ) -> EnhancementPairs:
        """Separate seed streams for training, validation and held-out pairs."""
        entropy = np.random.SeedSequence([seed, stream]).generate_state(1)[0]
        return EnhancementPairs(
            self.spec.input, int(entropy), count, patch=patch, per_slice=self.patches_per_slice
        )

    def datasets(self, seed: int, data_dir: Path | None = None) -> tuple[EnhancementPairs, ...]:
        if data_dir is not None:
            raise DataError(
                f"{self.spec.name} trains on synthetic low-dose/clean pairs only; drop --data"
            )
        return (
            self._pairs(seed, 1, self.train_slices, self.patch),
            self._pairs(seed, 2, self.validation_slices),
        )

    def heldout(self, seed: int) -> EnhancementPairs:
        return self._pairs(seed, 3, self.heldout_slices)
