"""Small real torch models registered through the real plugin manager, for the engine tests.

They implement ModelImplementation like a plugin would: an image classifier-ish regressor and a
GRU over a series of variable length. Their weights are written to a temporary directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edgeimg import hookimpl
from edgeimg.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeSession
from edgeimg.engine import BuildResult, Engine, build_engine, load_engine
from edgeimg.plugins import get_registry, load_registry, reset_registry
from edgeimg.sdk.implementation import ModelImplementation
from edgeimg.sdk.model import InputSpec, ModelSpec

SIZE = 16
FEATURES = 6


class _Image(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(8, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(image).mean(dim=(2, 3)))


class _Series(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(FEATURES, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        _, hidden = self.gru(series)
        return self.head(hidden[-1])


class _Fake(ModelImplementation):
    """Target: the network's own FP32 output plus a little noise; metric: mean abs error."""

    output_names = ("score",)

    def _inputs(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        raise NotImplementedError

    def example_inputs(self, batch: int = 2) -> tuple[np.ndarray, ...]:
        return (self._inputs(np.random.default_rng(0), batch),)

    def heldout(self, seed: int) -> torch.utils.data.Dataset:
        inputs = torch.from_numpy(self._inputs(np.random.default_rng(seed), 48))
        targets = torch.from_numpy(np.random.default_rng(seed + 1).random((48, 1), np.float32))
        return torch.utils.data.TensorDataset(inputs, targets)

    def metrics(self, outputs: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, float]:
        return {"mae": float(np.mean(np.abs(outputs[0] - targets[0])))}


class FakeImageModel(_Fake):
    input_names = ("image",)
    dynamic_axes = {"image": {0: "batch"}, "score": {0: "batch"}}

    def build(self) -> nn.Module:
        return _Image()

    def _inputs(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        return rng.random((batch, 1, SIZE, SIZE), dtype=np.float32)


class FakeSeriesModel(_Fake):
    input_names = ("series",)
    dynamic_axes = {"series": {0: "batch", 1: "length"}, "score": {0: "batch"}}
    length = 5

    def build(self) -> nn.Module:
        return _Series()

    def _inputs(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        return rng.standard_normal((batch, self.length, FEATURES), dtype=np.float32)


class _NoisyRunner(OnnxRuntimeSession):
    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(o + 1.0 for o in super().run(*arrays))


class NoisyBackend(OnnxRuntimeBackend):
    """A backend whose engines are wrong by 1.0: verification must refuse them."""

    name = "noisy"
    priority = 0

    def open(self, engine_path, spec, manifest):
        return _NoisyRunner(engine_path)


def build(name: str, *args, **options) -> BuildResult:
    """build_engine as a command calls it: names resolved through the registry by the caller."""
    registry = get_registry()
    return build_engine(registry.model(name), registry.backends, *args, **options)


def load(name: str, *args, **options) -> Engine:
    """load_engine as `run` calls it: names resolved through the registry by the caller."""
    registry = get_registry()
    return load_engine(registry.model(name), registry.backends, *args, **options)


def write_weights(spec: ModelSpec, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    network = spec.load()(spec).build()
    path = Path(spec.weights)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return path


class FakePlugin:
    def __init__(self, specs: list[ModelSpec]) -> None:
        self.specs = specs

    @hookimpl
    def register_models(self, register):
        for spec in self.specs:
            register(spec)

    @hookimpl
    def register_backends(self, register):
        register(NoisyBackend())


def fake_specs(directory: Path) -> list[ModelSpec]:
    image = ModelSpec(
        name="fake-image",
        version="1.0",
        task="classify",
        summary="test image model",
        implementation="tests.test_engine_fakes:FakeImageModel",
        weights=str(directory / "fake-image.safetensors"),
        input=InputSpec(size=(SIZE, SIZE), window_center=40.0, window_width=400.0),
        metric="mae",
        tolerance=0.05,
        higher_is_better=False,
    )
    series = dataclasses.replace(
        image,
        name="fake-series",
        task="series-classify",
        implementation="tests.test_engine_fakes:FakeSeriesModel",
        weights=str(directory / "fake-series.safetensors"),
        input=InputSpec(size=(SIZE, SIZE), sequence=True, min_length=2, max_length=12),
    )
    return [image, series]


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """The fake models registered (with weights) and engines written under tmp_path."""
    specs = fake_specs(tmp_path)
    for spec in specs:
        write_weights(spec)
    registry = load_registry(extra=[("engine-fakes", FakePlugin(specs))])
    reset_registry(registry)
    monkeypatch.setenv("EDGEIMG_ENGINES", str(tmp_path / "engines"))
    return {spec.name: spec for spec in specs}
