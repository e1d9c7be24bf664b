"""Autoencoder implementation: low-dose denoising, an anomaly score and per-slice embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgeimg import sdk
from edgeimg_autoencoder.network import DenoisingAutoencoder


class AutoencoderModel(sdk.Enhancer):
    """Denoised image for `run` (derived series), anomaly score for SR, embeddings for search."""

    input_names = ("image",)
    output_names = ("denoised", "healthy", "anomaly_score")
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names}
    epochs = 10
    batch_size = 32
    learning_rate = 1e-3
    weight_decay = 1e-4

    def build(self) -> nn.Module:
        return DenoisingAutoencoder()

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """L1 to the clean slice, and to the healed slice for the healthy reconstruction."""
        denoised, healthy, _ = outputs
        clean, healed = targets[0], targets[1]
        return F.l1_loss(denoised, clean) + F.l1_loss(healthy, healed)

    def metrics(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        denoised, _, score = outputs
        clean, _, noisy, lesion = targets
        return {
            **sdk.enhancement_metrics(denoised, noisy, clean),
            "anomaly_auc": sdk.auc(score, lesion),
        }

    def postprocess(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        denoised, _, score = outputs
        return [
            {"image": image[0], "anomaly_score": float(value)}
            for image, value in zip(denoised, score, strict=True)
        ]

    @torch.no_grad()
    def embed(self, network: nn.Module, images: np.ndarray) -> np.ndarray:
        """Per-slice embeddings (N, D) of windowed slices (N, 1, H, W), e.g. for retrieval."""
        network.eval()
        return network.embed(torch.as_tensor(images, dtype=torch.float32)).numpy()
