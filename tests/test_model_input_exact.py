"""Model input is windowed only where the resize reads: the same floats as windowing the whole
slice first (`to_model_input` would otherwise window every pixel of a 512 x 512 slice for a
96 x 96 input)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset

from edgeimg.dicom.preprocess import resize, to_model_input, window


def _image(frames: np.ndarray) -> Any:
    """What to_model_input reads of a decoded image: its frames (and header, for RGB)."""
    return SimpleNamespace(header=Dataset(), frames=frames)


@pytest.mark.parametrize(
    ("shape", "size"), [((2, 512, 512), 96), ((1, 300, 200), (97, 61)), ((1, 40, 50), 64)]
)
@pytest.mark.parametrize("channels", [1, 3])
def test_windowing_only_what_the_resize_reads_gives_the_same_floats(shape, size, channels):
    hu = np.random.default_rng(7).normal(0, 600, shape).astype(np.float32)
    got = to_model_input(_image(hu), size=size, window=(40, 400), channels=channels)
    target = (size, size) if isinstance(size, int) else size
    expected = resize(window(hu, 40, 400), target)[:, None]
    expected = np.repeat(expected, channels, axis=1)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, expected)


def test_several_windows_are_cut_alike():
    hu = np.random.default_rng(8).normal(0, 600, (1, 512, 512)).astype(np.float32)
    windows = [(40, 80), (80, 200), (600, 2800)]
    got = to_model_input(_image(hu), size=96, window=windows, channels=3)
    expected = np.stack([resize(window(hu, c, w), (96, 96)) for c, w in windows], axis=1)
    assert np.array_equal(got, expected)
