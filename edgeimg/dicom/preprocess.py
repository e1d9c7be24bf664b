"""Turn decoded frames into model input: window, resize, stack channels (numpy only).

The model sees windowed, resized slices: each frame is mapped to [0, 1] through a fixed
window (e.g. HU for CT), then resized, then laid out as (F, C, H, W) float32. Windowing comes
first so that resizing averages what the model would see, not raw values outside the window.
No torch here, so the listener and CLI can prepare input before any backend is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeimg.dicom.read import Image

__all__ = ["resize", "to_model_input", "window"]

Window = tuple[float, float]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map ``center ± width/2`` linearly onto [0, 1], clipping outside; float32."""
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = np.float32(center - width / 2)
    out = np.subtract(hu, low, dtype=np.float32)
    out *= np.float32(1 / width)
    return np.clip(out, 0, 1, out=out)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes to `size` (h, w), returning float32.

    Integer-factor downsampling (512 -> 128) averages blocks, which is fast and does not alias;
    anything else is bilinear with pixel-centre alignment (as torch's align_corners=False).
    """
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    src = np.asarray(img, dtype=np.float32)
    if src.ndim < 2:
        raise ValueError(f"need at least 2 dimensions, got shape {src.shape}")
    rows, cols = src.shape[-2:]
    if (rows, cols) == (h, w):
        return src.copy()
    if rows % h == 0 and cols % w == 0:
        fh, fw = rows // h, cols // w
        blocks = src.reshape(*src.shape[:-2], h, fh, w, fw)
        return blocks.mean(axis=(-3, -1), dtype=np.float32)
    return _bilinear(src, _bilinear_taps(rows, h), _bilinear_taps(cols, w))


Taps = tuple[np.ndarray, np.ndarray, np.ndarray]


def _bilinear(src: np.ndarray, row_taps: Taps, col_taps: Taps) -> np.ndarray:
    top, bottom, wy = row_taps
    left, right, wx = col_taps
    vertical = src[..., top, :] * (1 - wy)[:, None] + src[..., bottom, :] * wy[:, None]
    return vertical[..., left] * (1 - wx) + vertical[..., right] * wx


def to_model_input(
    image: Image,
    *,
    size: int | tuple[int, int] | None = None,
    window: Window | Sequence[Window] | None = None,
    channels: int = 1,
) -> np.ndarray:
    """(F, C, H, W) float32 in [0, 1] for a model: windowed, resized slices.

    * `window` (center, width) is applied to greyscale frames; a list of windows gives one
      channel per window (e.g. brain, subdural, bone), and its length must equal `channels`.
      Without a window, greyscale frames are min-max scaled per image and RGB frames are
      divided by the largest stored value.
    * `channels` 1 or 3: greyscale is repeated into 3 channels, RGB is reduced to luminance.
    * `size` is (h, w) or an int for square output; None keeps the native size.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    windows = _windows(window)
    frames = image.frames
    target = (size, size) if isinstance(size, int) else size
    taps = None
    if target is not None and windows and frames.ndim == 3 and _bilinear_applies(frames, target):
        frames, taps = _cut_to_taps(frames, target)
    if frames.ndim == 4:
        stacked = _scale_rgb(image, frames, windows)
        if channels == 1:
            stacked = np.tensordot(stacked, _LUMA, axes=([1], [0]))[:, None]
    elif len(windows) > 1:
        if len(windows) != channels:
            raise ValueError(f"{len(windows)} windows for {channels} channel(s)")
        stacked = np.stack([_window_frames(frames, w) for w in windows], axis=1)
    else:
        stacked = _window_frames(frames, windows[0] if windows else None)[:, None]
        if channels == 3:
            stacked = np.repeat(stacked, 3, axis=1)
    if taps is not None:
        stacked = _bilinear(stacked, *taps)
    elif target is not None:
        stacked = resize(stacked, target)
    return np.ascontiguousarray(stacked, dtype=np.float32)


def _bilinear_applies(frames: np.ndarray, target: tuple[int, int]) -> bool:
    """Whether `resize` would take the bilinear path for these frames and this target."""
    (rows, cols), (h, w) = frames.shape[-2:], (int(v) for v in target)
    return h >= 1 and w >= 1 and (rows, cols) != (h, w) and (rows % h or cols % w) != 0


def _cut_to_taps(frames: np.ndarray, target: tuple[int, int]) -> tuple[np.ndarray, list[Taps]]:
    """The frames cut to the rows and columns a bilinear resize to `target` reads, and that
    resize's taps into the cut.

    A window is applied pixel by pixel, so windowing only the pixels the resize reads gives
    the same input, bit for bit: a 512 x 512 slice resized to 96 x 96 reads 192 x 192 of them,
    a seventh of the windowing's work.
    """
    rows, row_taps = _used(_bilinear_taps(frames.shape[-2], int(target[0])))
    cols, col_taps = _used(_bilinear_taps(frames.shape[-1], int(target[1])))
    return frames[..., rows, :][..., cols], [row_taps, col_taps]


def _used(taps: Taps) -> tuple[np.ndarray, Taps]:
    """The source indices `taps` read, and the taps as indices into those."""
    low, high, weight = taps
    used, index = np.unique(np.concatenate([low, high]), return_inverse=True)
    return used, (index[: len(low)], index[len(low) :], weight)


def _windows(value: Window | Sequence[Window] | None) -> list[Window]:
    if value is None:
        return []
    if len(value) == 2 and all(np.isscalar(v) for v in value):
        center, width = value
        return [(float(center), float(width))]  # type: ignore[arg-type]
    return [(float(c), float(w)) for c, w in value]  # type: ignore[misc]


def _window_frames(frames: np.ndarray, win: Window | None) -> np.ndarray:
    if win is not None:
        return window(frames, *win)
    low, high = (float(frames.min()), float(frames.max())) if frames.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(frames.shape, dtype=np.float32)
    return window(frames, (low + high) / 2, high - low)


def _scale_rgb(image: Image, frames: np.ndarray, windows: list[Window]) -> np.ndarray:
    """RGB frames as (F, 3, R, C) in [0, 1]."""
    planes = np.moveaxis(frames, -1, 1)
    if len(windows) == 1:
        return window(planes, *windows[0])
    if windows:
        raise ValueError("RGB input takes one window or none")
    bits = int(image.header.get("BitsStored") or 8)
    return np.divide(planes, np.float32(2**bits - 1), dtype=np.float32)


def _bilinear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices and weights mapping `dst` output pixel centres into `src`."""
    centres = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    centres = np.clip(centres, 0, src - 1)
    low = np.floor(centres).astype(np.intp)
    high = np.minimum(low + 1, src - 1)
    return low, high, (centres - low).astype(np.float32)
