"""Image-quality metrics shared by the enhancement models (autoencoder, GAN).

numpy only, so `evaluate` and engine verification can score outputs from any backend. Images are
arrays of shape (..., H, W) on a common intensity scale; `data_range` is that scale's span.
"""

from __future__ import annotations

import numpy as np


def psnr(output: np.ndarray, clean: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, from the mean squared error over all pixels."""
    mse = float(np.mean((np.asarray(output, np.float64) - np.asarray(clean, np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def _box_mean(images: np.ndarray, size: int) -> np.ndarray:
    """Mean over size x size windows (valid region only), via 2-D cumulative sums."""
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(1, 0), (1, 0)])
    sums = padded.cumsum(-1).cumsum(-2)
    window = (
        sums[..., size:, size:]
        - sums[..., :-size, size:]
        - sums[..., size:, :-size]
        + sums[..., :-size, :-size]
    )
    return window / (size * size)


def ssim(output: np.ndarray, clean: np.ndarray, data_range: float = 1.0, window: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) with a uniform window, as scikit-image."""
    x = np.asarray(output, np.float64)
    y = np.asarray(clean, np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    correction = window * window / (window * window - 1)
    mx, my = _box_mean(x, window), _box_mean(y, window)
    vx = (_box_mean(x * x, window) - mx * mx) * correction
    vy = (_box_mean(y * y, window) - my * my) * correction
    cov = (_box_mean(x * y, window) - mx * my) * correction
    index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(index.mean())


def gradient_magnitude(images: np.ndarray) -> np.ndarray:
    """Per-pixel magnitude of finite-difference gradients (interior pixels), a sharpness proxy."""
    x = np.asarray(images, np.float64)
    gx = x[..., 1:-1, 2:] - x[..., 1:-1, :-2]
    gy = x[..., 2:, 1:-1] - x[..., :-2, 1:-1]
    return np.sqrt(gx * gx + gy * gy) / 2.0


def gradient_ratio(output: np.ndarray, clean: np.ndarray) -> float:
    """Mean gradient magnitude of the output over that of the clean image: 1.0 = as sharp.

    Below 1 means over-smoothed (the usual failure of L2/L1-trained denoisers); above 1 means
    noise or artefacts left in.
    """
    reference = float(gradient_magnitude(clean).mean())
    if reference == 0.0:
        return float("nan")
    return float(gradient_magnitude(output).mean() / reference)


def enhancement_metrics(
    output: np.ndarray, noisy: np.ndarray, clean: np.ndarray, data_range: float = 1.0
) -> dict[str, float]:
    """The enhance task's `evaluate` keys: psnr, psnr_noisy, ssim, gradient_ratio."""
    return {
        "psnr": psnr(output, clean, data_range),
        "psnr_noisy": psnr(noisy, clean, data_range),
        "ssim": ssim(output, clean, data_range),
        "gradient_ratio": gradient_ratio(output, clean),
    }
