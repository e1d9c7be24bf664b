"""Synthetic series for the sequence models: phantoms windowed to [0, 1], padded per batch.

Each item is (series (L, 1, H, W), target (1 + L,)), L = max_length: target[0] is the series
label (a lesion persists on >= 4 consecutive slices), target[1:] says which slices show a blob
(lesion or decoy), the auxiliary target of the per-slice head.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeimg.model import InputSpec
from edgeimg.synth.phantom import make_phantom
from edgeimg_sequence.network import PAD

#: padding value of slice targets, ignored by the loss
IGNORE = -1.0


def window(hu: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HU to [0, 1] through the model's window, as the core does for DICOM input."""
    low = spec.window_center - spec.window_width / 2
    return np.clip((hu - low) / spec.window_width, 0.0, 1.0).astype(np.float32)


class SeriesDataset(Dataset):
    """`count` phantoms of random length in [min_length, max_length]; a third have gaps."""

    def __init__(self, spec: InputSpec, seed: int, count: int) -> None:
        rng = np.random.default_rng(seed)
        self.max_length = spec.max_length
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        for _ in range(count):
            phantom = make_phantom(
                rng,
                slices=int(rng.integers(spec.min_length, spec.max_length + 1)),
                size=spec.size[0],
                lesion_probability=0.5,
                decoy_probability=0.7,
                gaps=bool(rng.random() < 1 / 3),
            )
            series = window(phantom.hu, spec).astype(np.float16)[:, None]
            target = np.concatenate([[phantom.persistent], phantom.slice_labels]).astype(np.float32)
            self.items.append((series, target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One series padded to max_length, so the core's default batching and output
        concatenation work; the network masks the PAD slices, the loss the IGNORE targets."""
        series, target = self.items[index]
        steps = self.max_length
        padded = np.full((steps, *series.shape[1:]), PAD, np.float32)
        padded[: len(series)] = series
        padded_target = np.full(steps + 1, IGNORE, np.float32)
        padded_target[: len(target)] = target
        return torch.from_numpy(padded), torch.from_numpy(padded_target)
