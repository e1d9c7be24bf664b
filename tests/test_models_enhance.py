"""The enhancement models (autoencoder, GAN) and the image metrics they share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from edgeimg.enhance_data import EnhancementPairs, heal
from edgeimg.metrics_image import gradient_ratio, psnr, ssim
from edgeimg.plugins import get_registry
from edgeimg.training import evaluate
from tests.models import implementation_of, two_threads  # noqa: F401 - fixture used via pytestmark

MODELS = ("autoencoder", "gan")


pytestmark = pytest.mark.usefixtures("two_threads")


def _batch(implementation, count: int = 4) -> tuple:
    data = EnhancementPairs(implementation.spec.input, 5, count)
    inputs, *targets = default_collate([data[i] for i in range(count)])
    return inputs, tuple(targets)


def test_image_metrics() -> None:
    rng = np.random.default_rng(0)
    clean = np.zeros((2, 32, 32))
    clean[:, 8:24, 8:24] = 0.5
    noisy = clean + rng.normal(0, 0.1, clean.shape)
    blurred = (clean + np.roll(clean, 1, -1) + np.roll(clean, -1, -1)) / 3
    assert psnr(noisy, clean) == pytest.approx(20.0, abs=0.3)
    assert ssim(clean, clean) == pytest.approx(1.0)
    assert ssim(noisy, clean) < ssim((clean + noisy) / 2, clean) < 1.0
    assert gradient_ratio(clean, clean) == pytest.approx(1.0)
    assert gradient_ratio(blurred, clean) < 1.0 < gradient_ratio(noisy, clean)


def test_heal_changes_only_lesion_pixels() -> None:
    hu = np.full((1, 16, 16), 60.0, np.float32)
    mask = np.zeros((1, 16, 16), np.uint8)
    mask[0, 6:9, 6:9] = 1
    hu[mask.astype(bool)] = 150.0
    healed = heal(hu, mask)
    assert np.all(healed == 60.0)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_forward_shapes(name: str, batch: int) -> None:
    implementation = implementation_of(name)
    (image,) = implementation.example_inputs(batch)
    with torch.no_grad():
        outputs = implementation.build().eval()(torch.from_numpy(image))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(implementation.output_names)
    assert tuple(outputs[0].shape) == image.shape
    results = implementation.postprocess(tuple(o.numpy() for o in outputs))
    assert len(results) == batch and results[0]["image"].shape == image.shape[-2:]


def test_autoencoder_embedding_and_score() -> None:
    implementation = implementation_of("autoencoder")
    network = implementation.build()
    (image,) = implementation.example_inputs(5)
    embedding = implementation.embed(network, image)
    assert embedding.ndim == 2 and embedding.shape[0] == 5
    with torch.no_grad():
        _, _, score = network(torch.from_numpy(image))
    assert tuple(score.shape) == (5,) and bool((score >= 0).all())


@pytest.mark.parametrize("name", MODELS)
def test_training_steps_reduce_loss_deterministically(name: str) -> None:
    implementation_class = type(implementation_of(name))
    spec = get_registry().model(name)
    inputs, targets = _batch(implementation_class(spec))

    def run() -> tuple[list[dict[str, float]], torch.nn.Module]:
        torch.manual_seed(0)
        implementation = implementation_class(spec)
        network = implementation.build()
        optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3)
        logs = [implementation.train_step(network, inputs, targets, optimizer) for _ in range(6)]
        return logs, network

    logs, network = run()
    key = "g_l1" if name == "gan" else "loss"
    assert logs[-1][key] < logs[0][key] * 0.8
    if name == "gan":
        assert {"d_loss", "g_adversarial"} <= set(logs[0])
    again, network_again = run()
    assert again == logs
    for a, b in zip(
        network.state_dict().values(), network_again.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_gan_ships_only_the_generator() -> None:
    spec = get_registry().model("gan")
    generator_keys = set(implementation_of("gan").build().state_dict())
    assert set(load_file(str(spec.weights_path()))) == generator_keys


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the shipped 32x32 autoencoder and gan pass their input through (psnr +0.07 and "
    "+0.18 dB over noisy, anomaly_auc 0.35); they need retraining at 64x64 (issue 4 is open)",
)
def test_shipped_weights_meet_the_bars() -> None:
    registry = get_registry()
    autoencoder = evaluate(registry.model("autoencoder"), seed=2024)["metrics"]
    gan = evaluate(registry.model("gan"), seed=2024)["metrics"]
    assert autoencoder["psnr"] >= autoencoder["psnr_noisy"] + 6.0
    assert autoencoder["anomaly_auc"] >= 0.90
    assert gan["psnr"] >= gan["psnr_noisy"] + 4.0
    assert abs(gan["gradient_ratio"] - 1.0) < abs(autoencoder["gradient_ratio"] - 1.0)
