"""Conditional GAN implementation: adversarial + L1 training, generator-only deployment."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgeimg import sdk
from edgeimg_gan.network import Generator, PatchDiscriminator


class GANModel(sdk.Enhancer):
    """`build()` is the generator, and the weights file holds only the generator.

    The discriminator and its optimizer are created by the first `train_step`, from the torch
    generator the training loop has seeded, so a seed still gives the same weights.
    """

    epochs = 8
    batch_size = 32
    learning_rate = 1e-3
    weight_decay = 0.0
    discriminator_learning_rate = 2e-4
    #: the adversarial term's full weight; reached after the warm-up and a linear ramp (steps).
    #: The discriminator trains from the first step; the generator first learns the L1 task,
    #: so the adversarial pull refines a good denoiser rather than steering a random one.
    adversarial_weight = 0.05
    adversarial_warmup_steps = 384
    adversarial_ramp_steps = 128
    #: weight of the L1 reconstruction (pix2pix: 100 against an adversarial weight of 1)
    l1_weight = 100.0
    extra_hyperparameters = (
        "l1_weight",
        "adversarial_weight",
        "adversarial_warmup_steps",
        "adversarial_ramp_steps",
        "discriminator_learning_rate",
    )

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.discriminator: PatchDiscriminator | None = None
        self.discriminator_optimizer: torch.optim.Optimizer | None = None
        self.generator_steps = 0

    def build(self) -> nn.Module:
        return Generator()

    def _ensure_discriminator(self) -> tuple[PatchDiscriminator, torch.optim.Optimizer]:
        if self.discriminator is None or self.discriminator_optimizer is None:
            self.discriminator = PatchDiscriminator()
            self.discriminator_optimizer = torch.optim.Adam(
                self.discriminator.parameters(),
                lr=self.discriminator_learning_rate,
                betas=(0.5, 0.999),
            )
        return self.discriminator, self.discriminator_optimizer

    def current_adversarial_weight(self) -> float:
        """0 during the warm-up, then a linear ramp to `adversarial_weight`."""
        past_warmup = self.generator_steps - self.adversarial_warmup_steps
        ramped = past_warmup / self.adversarial_ramp_steps
        return self.adversarial_weight * min(1.0, max(0.0, ramped))

    def train_step(
        self,
        network: nn.Module,
        inputs: torch.Tensor,
        targets: Any,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, float]:
        """Discriminator step on real and generated pairs, then generator step on
        adversarial + L1; logs both networks' losses."""
        discriminator, d_optimizer = self._ensure_discriminator()
        discriminator.train()
        clean = targets[0]
        fake = network(inputs)

        real_logits = discriminator(inputs, clean)
        fake_logits = discriminator(inputs, fake.detach())
        d_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        )
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()

        judged = discriminator(inputs, fake)
        adversarial = F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
        l1 = self.loss(fake, targets)
        weight = self.current_adversarial_weight()
        g_loss = weight * adversarial + self.l1_weight * l1
        optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        optimizer.step()
        self.generator_steps += 1
        return {
            "loss": g_loss.item(),
            "g_adversarial": adversarial.item(),
            "g_l1": l1.item(),
            "d_loss": d_loss.item(),
            "adversarial_weight": weight,
        }
