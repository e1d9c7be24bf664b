"""A base implementation for supervised 2D slice models (classifier, U-Net, detector).

Subclasses say how a slice's lesion mask and boxes become their training target and how raw
outputs are scored; data generation, DICOM folders and held-out sets are shared here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from edgeimg.sdk.datasets import SliceData, split, synthetic
from edgeimg.sdk.implementation import ModelImplementation, missing

HELDOUT_STREAM = 7919
"""Mixed into the seed so a held-out set never repeats training data drawn from the same seed."""


class SliceModel(ModelImplementation):
    """Single-slice input (N, 1, H, W) windowed to [0, 1]; synthetic data from edgeimg.synth."""

    #: synthetic set sizes: training, validation (best-epoch choice) and held-out (evaluate)
    train_size: int = 2000
    val_size: int = 300
    heldout_size: int = 300
    #: fraction of training slices given simulated low-dose noise
    train_noise: float = 0.0

    def example_inputs(self, batch: int = 2) -> tuple[np.ndarray, ...]:
        height, width = self.spec.input.size
        rng = np.random.default_rng(0)
        return (rng.random((batch, 1, height, width), dtype=np.float32),)

    def target(self, data: SliceData) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The training target(s) for these slices, batch axis first."""
        raise missing(self, "target")

    def read_folder(self, data_dir: Path) -> SliceData:
        """Slices from a user's DICOM folder (the family decides which layout it reads)."""
        raise missing(self, "read_folder")

    def _dataset(self, data: SliceData) -> Dataset:
        targets = self.target(data)
        targets = targets if isinstance(targets, tuple) else (targets,)
        return TensorDataset(torch.from_numpy(data.images), *targets)

    def datasets(self, seed: int, data_dir: Path | None = None) -> tuple[Dataset, Dataset]:
        rng = np.random.default_rng([seed, 0])
        if data_dir is not None:
            train, validation = split(self.read_folder(Path(data_dir)), rng)
        else:
            train = synthetic(self.spec.input, rng, self.train_size, noise=self.train_noise)
            validation = synthetic(self.spec.input, rng, self.val_size)
        return self._dataset(train), self._dataset(validation)

    def heldout(self, seed: int) -> Dataset:
        rng = np.random.default_rng([seed, HELDOUT_STREAM])
        return self._dataset(synthetic(self.spec.input, rng, self.heldout_size))
