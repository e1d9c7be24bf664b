"""What the model-family tests share: the registered implementation and a fixed thread count."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from edgeimg.plugins import get_registry
from edgeimg.sdk.training import implementation_for


@pytest.fixture
def two_threads() -> None:
    """Both cores, as on CI, so timings and results do not depend on the host."""
    torch.set_num_threads(2)


def implementation_of(name: str) -> Any:
    """The implementation object of a registered model."""
    return implementation_for(get_registry().model(name))
