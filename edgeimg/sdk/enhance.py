"""Enhancer: slice in, better slice out (denoising), written as a derived DICOM image.

Trains on paired synthetic low-dose / normal-dose slices (`EnhancementPairs`), cut into patches,
validated on whole slices. A plugin writes `build()` only; a fully convolutional network keeps
native resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from edgeimg.sdk.enhance_data import EnhancementModel
from edgeimg.sdk.metrics_image import enhancement_metrics


class Enhancer(EnhancementModel):
    """Network: image (N, 1, H, W) in [0, 1] to `enhanced` (N, 1, H, W) in the same window.

    Write `build()`. Provided: `example_inputs`, `datasets` (train: items are noisy, clean,
    healed, noisy, lesion), `heldout` (evaluate, build-engine), `loss` L1 to the clean slice
    (train), `metrics` psnr/ssim (train, evaluate, build-engine), `postprocess` (run, serve).
    """

    output_names = ("enhanced",)
    dynamic_axes = {"image": {0: "batch"}, "enhanced": {0: "batch"}}

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        return F.l1_loss(outputs, targets[0])

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        clean, _, noisy, _ = targets
        return enhancement_metrics(outputs[0], noisy, clean)

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        return [{"image": image[0]} for image in outputs[0]]
