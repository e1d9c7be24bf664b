"""A low-dose CT noise model, so denoising models get realistic paired clean/noisy images.

Quantum noise dominates low-dose CT. A detector reading behind a path of water-equivalent
length L receives N ~ N0 * exp(-mu_w * L) photons, and the Poisson variance of its log
reading is ~1/N, so the noise a ray contributes grows like exp(mu_w * L / 2) and like
1/sqrt(N0), that is 1/sqrt(dose). Filtered back-projection spreads that into the image as
noise that is (a) non-stationary: pixels behind long paths (the centre of a wide patient)
are noisier, and (b) correlated, with a noise power spectrum (NPS) that vanishes at zero
frequency, rises like the ramp filter |f| and is cut off by the reconstruction kernel.

The model, per axial slice:

    sigma(x, y) = full_dose_sigma / sqrt(dose_fraction)
                  * sqrt((exp(mu_w (L_row(y) - L_REF)) + exp(mu_w (L_col(x) - L_REF))) / 2)
    noisy = hu + sigma * n,   n = white Gaussian noise shaped by NPS(f) ~ |f| exp(-(f/F_C)^2)

L_row and L_col are the water-equivalent path lengths (mm) through the pixel along the row and
the column, the two extreme projection angles; the variance averages their contributions as
back-projection averages views. Gaussian noise stands in for Poisson, as N is large.
"""

from __future__ import annotations

import numpy as np

from edgeimg.synth.anatomy import FOV_MM

MU_WATER = 0.019
"""Linear attenuation of water at about 70 keV effective energy, per mm."""

L_REF = 300.0
"""Water-equivalent path (mm) at which full-dose noise equals `full_dose_sigma`."""

F_C = 0.3
"""Kernel cut-off (cycles/mm): NPS peaks at F_C / sqrt(2) = 0.21, like a soft-tissue kernel."""


def path_factor(hu: np.ndarray, pixel_spacing: float) -> np.ndarray:
    """Per-pixel noise multiplier from the water-equivalent path lengths through each pixel."""
    water = np.clip((hu.astype(np.float32) + 1000.0) / 1000.0, 0.0, None) * pixel_spacing
    rows = water.sum(axis=-1, keepdims=True)
    cols = water.sum(axis=-2, keepdims=True)
    variance = (np.exp(MU_WATER * (rows - L_REF)) + np.exp(MU_WATER * (cols - L_REF))) / 2.0
    return np.sqrt(np.clip(variance, 1.0 / 16.0, 64.0)).astype(np.float32)


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], pixel_spacing: float
) -> np.ndarray:
    """Unit-variance Gaussian noise with a CT-like ramp-times-kernel noise power spectrum."""
    ny, nx = shape[-2], shape[-1]
    fy = np.fft.fftfreq(ny, d=pixel_spacing)[:, None]
    fx = np.fft.fftfreq(nx, d=pixel_spacing)[None, :]
    freq = np.hypot(fy, fx)
    nps = freq * np.exp(-((freq / F_C) ** 2))
    gain = np.sqrt(nps / nps.mean())
    white = rng.standard_normal(shape, dtype=np.float32)
    half = gain[:, : nx // 2 + 1]
    shaped = np.fft.irfft2(np.fft.rfft2(white) * half, s=(ny, nx))
    return shaped.astype(np.float32)


def low_dose(
    hu: np.ndarray,
    rng: np.random.Generator,
    dose_fraction: float = 0.25,
    full_dose_sigma: float = 10.0,
    *,
    pixel_spacing: float | None = None,
) -> np.ndarray:
    """Simulate a scan of the same patient at `dose_fraction` of full dose.

    `hu` is a clean image or stack (..., rows, cols) in Hounsfield units; the result has the
    same shape, float32, unclipped. Noise sigma is `full_dose_sigma` at dose 1 behind L_REF mm
    of water and scales as 1/sqrt(dose_fraction) and exp(mu_w * L / 2) with the patient's
    water-equivalent path; see the module docstring. `pixel_spacing` (mm) defaults to the
    phantom's field of view divided by the image width.
    """
    if not 0.0 < dose_fraction <= 1.0:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
    spacing = pixel_spacing if pixel_spacing is not None else FOV_MM / hu.shape[-1]
    sigma = full_dose_sigma / np.sqrt(dose_fraction) * path_factor(hu, spacing)
    noise = correlated_noise(rng, hu.shape, spacing)
    return (hu + sigma * noise).astype(np.float32)
