"""The enhancement models (autoencoder, GAN) and the image metrics they share."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from torch.utils.data import default_collate

from edgeimg.plugins import get_registry
from edgeimg.sdk.enhance_data import EnhancementPairs, heal
from edgeimg.sdk.metrics_image import gradient_ratio, psnr, ssim
from edgeimg.sdk.model import InputSpec
from edgeimg.sdk.training import evaluate, load_network
from tests.models import implementation_of, two_threads  # noqa: F401 - fixture used via pytestmark

MODELS = ("autoencoder", "gan")


pytestmark = pytest.mark.usefixtures("two_threads")


def _batch(implementation, count: int = 4) -> tuple:
    """Training patches, as the training loop sees them."""
    data = EnhancementPairs(implementation.spec.input, 5, 1, patch=64, per_slice=count)
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


def test_pairs_are_full_slices_or_patches_on_the_body() -> None:
    spec = InputSpec(size=(128, 128))
    full = EnhancementPairs(spec, 3, 4)
    assert tuple(full.noisy.shape) == (4, 1, 128, 128) and full.lesion.tolist().count(1.0) == 2
    patches = EnhancementPairs(spec, 3, 4, patch=32, per_slice=6)
    assert tuple(patches.clean.shape) == (24, 1, 32, 32)
    assert patches.lesion.sum() >= 6  # half the patches of the two lesion slices sit on lesions
    body = (patches.clean > 0.0).flatten(1).float().mean(dim=1)
    assert bool((body > 0.1).all())  # centred on the body, not on the air around it
    assert not torch.equal(patches.noisy, patches.clean)
    again = EnhancementPairs(spec, 3, 4, patch=32, per_slice=6)
    assert torch.equal(again.noisy, patches.noisy) and torch.equal(again.healed, patches.healed)


@pytest.mark.parametrize("name", MODELS)
def test_native_resolution_and_fully_convolutional(name: str) -> None:
    """The spec asks for whole 512 x 512 slices; the same weights run on training patches."""
    implementation = implementation_of(name)
    assert implementation.spec.input.size == (512, 512)
    network = implementation.build().eval()
    patch = torch.rand(2, 1, implementation.patch, implementation.patch)
    with torch.no_grad():
        outputs = network(patch)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert tuple(outputs[0].shape) == tuple(patch.shape)
    assert bool(((outputs[0] >= 0) & (outputs[0] <= 1)).all())


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


def _identity_loss(name: str, inputs: torch.Tensor, targets: tuple) -> float:
    """The loss of passing the noisy input through unchanged."""
    clean, healed = targets[0], targets[1]
    loss = F.l1_loss(inputs, clean)
    return float(loss + F.l1_loss(inputs, healed)) if name == "autoencoder" else float(loss)


@pytest.mark.parametrize("name", MODELS)
def test_training_starts_at_the_input_and_is_deterministic(name: str) -> None:
    """Both networks start as the identity (a zero last layer), so the first step's loss is the
    input's own; a seed gives the same losses and weights."""
    implementation_class = type(implementation_of(name))
    spec = get_registry().model(name)
    inputs, targets = _batch(implementation_class(spec))

    def run() -> tuple[list[dict[str, float]], torch.nn.Module]:
        torch.manual_seed(0)
        implementation = implementation_class(spec)
        network = implementation.build()
        optimizer = torch.optim.AdamW(network.parameters(), lr=implementation.learning_rate)
        logs = [implementation.train_step(network, inputs, targets, optimizer) for _ in range(4)]
        return logs, network

    logs, network = run()
    key = "g_l1" if name == "gan" else "loss"
    assert logs[0][key] == pytest.approx(_identity_loss(name, inputs, targets), rel=1e-5)
    assert logs[1][key] != logs[0][key]
    if name == "gan":
        assert {"d_loss", "g_adversarial"} <= set(logs[0])
    again, network_again = run()
    assert again == logs
    for a, b in zip(
        network.state_dict().values(), network_again.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_shipped_weights_beat_the_input_on_patches(name: str) -> None:
    """What training buys, cheaply: the shipped network's loss well under the identity's."""
    implementation = implementation_of(name)
    inputs, targets = _batch(implementation)
    network = load_network(get_registry().model(name))
    with torch.no_grad():
        loss = float(implementation.loss(network(inputs), targets))
    assert loss < 0.8 * _identity_loss(name, inputs, targets)


def test_gan_discriminator_learns_to_tell_real_from_fake() -> None:
    """The adversarial term only helps if the discriminator separates clean from noisy."""
    implementation = implementation_of("gan")
    inputs, targets = _batch(implementation, count=8)
    torch.manual_seed(0)
    network = implementation.build()
    optimizer = torch.optim.AdamW(network.parameters(), lr=implementation.learning_rate)
    logs = [implementation.train_step(network, inputs, targets, optimizer) for _ in range(25)]
    assert logs[-1]["d_loss"] < 0.9 * math.log(2)


def test_gan_adversarial_weight_warms_up_then_ramps() -> None:
    implementation = implementation_of("gan")
    full = implementation.adversarial_weight
    warmup, ramp = implementation.adversarial_warmup_steps, implementation.adversarial_ramp_steps
    weights = {}
    for step in (0, warmup, warmup + ramp // 2, warmup + ramp, warmup + 10 * ramp):
        implementation.generator_steps = step
        weights[step] = implementation.current_adversarial_weight()
    assert list(weights.values()) == pytest.approx([0.0, 0.0, full / 2, full, full])


def test_gan_history_logs_both_losses() -> None:
    metadata = get_registry().model("gan").weights_path().with_suffix(".json")
    history = json.loads(metadata.read_text())
    for epoch in history["history"]:
        assert {"d_loss", "g_adversarial", "g_l1", "psnr"} <= set(epoch)
    assert min(epoch["d_loss"] for epoch in history["history"]) < 0.9 * math.log(2)


def test_gan_ships_only_the_generator() -> None:
    spec = get_registry().model("gan")
    generator_keys = set(implementation_of("gan").build().state_dict())
    assert set(load_file(str(spec.weights_path()))) == generator_keys


@pytest.mark.slow
def test_shipped_weights_meet_the_bars() -> None:
    registry = get_registry()
    autoencoder = evaluate(registry.model("autoencoder"), seed=2024)["metrics"]
    gan = evaluate(registry.model("gan"), seed=2024)["metrics"]
    assert autoencoder["psnr"] >= autoencoder["psnr_noisy"] + 6.0
    assert autoencoder["anomaly_auc"] >= 0.90
    assert gan["psnr"] >= gan["psnr_noisy"] + 4.0
    assert abs(gan["gradient_ratio"] - 1.0) < abs(autoencoder["gradient_ratio"] - 1.0)
