"""The network behind `hello`: imported only when the model is built, trained or run."""

import numpy as np
import torch

from edgeimg.implementation import ModelImplementation


class HelloModel(ModelImplementation):
    """A one-layer classifier: enough to show where a real network goes."""

    def build(self) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 1),
        )

    def example_inputs(self, batch: int = 2) -> tuple[np.ndarray, ...]:
        height, width = self.spec.input.size
        return (np.zeros((batch, 1, height, width), dtype=np.float32),)
