"""Latent diffusion's stage 1: train the KL autoencoder (Rombach et al. 2022, Sec. 3.1).

A model file of this method holds the autoencoder's EMA weights and config like any other
checkpoint; ``udpm train --method ldm --autoencoder CKPT`` trains the diffusion on it. An
autoencoder reconstructs, it does not sample: ``udpm sample`` on it says so.
"""

from __future__ import annotations

import torch

from udpm.config.settings import AutoencoderSettings
from udpm.methods.base import Method
from udpm.methods.spec import MethodSpec
from udpm.objectives.autoencoder import (
    DiagonalGaussian,
    adaptive_weight,
    hinge_d_loss,
    reconstruction_loss,
)


class AutoencoderMethod(Method):
    """``G`` is the autoencoder, ``D`` the optional patch discriminator (``disc_weight > 0``).

    ``noise_gen`` draws the posterior noise ``z = μ + σ ε`` of the whole global batch, seeded
    alike on every rank (``Method.rank_rows``).
    """

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
        super().__init__(config, device, num_classes, autocast_dtype)
        from udpm.networks.autoencoder import PatchDiscriminator
        from udpm.objectives.udpm import Perceptual

        s = self.settings = config.settings
        self.process = None
        self.modules["G"] = build_generator(config, num_classes).to(self.device)
        if s.disc_weight > 0:
            disc = {"image_channels": config.channels, **config.discriminator}
            self.modules["D"] = PatchDiscriminator(**disc).to(self.device)
        self._make_optimizers()
        kind = s.perceptual if s.perceptual_weight > 0 else "none"
        self.perceptual = Perceptual(kind, self.device, **({} if warn is None else {"warn": warn}))
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)
        self.shown = None  # the first batch, reconstructed in the training-time grids

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        if self.shown is None:
            self.shown = x0[:32].detach().cpu()
        shape = self.modules["G"].latent_shape(x0.shape[1:])
        noise = self.rank_rows(
            lambda m: torch.randn((m, *shape), generator=self.noise_gen), len(x0)
        )
        parts = self.micro_batches(x0, noise)
        adversarial = "D" in self.modules and step >= self.settings.disc_start
        kept = [None] * len(parts)
        terms = self.optimise("G", lambda i: self._g_loss(*parts[i], adversarial, kept, i),
                              "the autoencoder loss")  # fmt: skip
        logs = {"loss_g": terms.pop("loss"), **terms}
        if adversarial:
            logs["loss_d"] = self._d_step(parts, kept)
        return logs

    def _g_loss(self, x0, noise, adversarial, kept, i):
        s = self.settings
        with self.autocast():
            x_hat, mean, logvar = self.net("G")(x0, noise)
        x_hat = x_hat.float()
        posterior = DiagonalGaussian(mean.float(), logvar.float())
        rec = reconstruction_loss(x0, x_hat, self._lpips, s.perceptual_weight)
        kl = posterior.kl().mean()
        loss = rec + s.kl_weight * kl
        terms = {"rec": rec.detach(), "kl": kl.detach(), "l1": (x0 - x_hat).abs().mean().detach()}
        kept[i] = x_hat.detach()
        if adversarial:
            D = self.modules["D"].requires_grad_(False)  # G's step needs D's input gradient only
            try:
                with self.autocast():
                    g_loss = -D(x_hat).float().mean()
            finally:
                D.requires_grad_(True)
            weight = adaptive_weight(rec, g_loss, self.modules["G"].last_layer, s.disc_weight)
            loss = loss + weight * g_loss
            terms["g_adv"] = g_loss.detach()
        return loss, terms

    @property
    def _lpips(self):
        return self.perceptual if self.perceptual.available else None

    def _d_step(self, parts, kept) -> float:
        def micro_loss(i):
            with self.autocast():
                real, fake = self.net("D")(parts[i][0]), self.net("D")(kept[i])
            return hinge_d_loss(real.float(), fake.float()), {}

        return self.optimise("D", micro_loss, "the patch discriminator loss")["loss"]

    def sample(self, network, seeds, labels) -> torch.Tensor:
        """Training-time grids: the first batch seen (top) over its reconstructions (bottom)."""
        if self.shown is None:
            return torch.zeros(
                (0, self.config.channels, self.config.resolution, self.config.resolution)
            )
        x = self.shown.to(self.device)
        with torch.no_grad():
            return torch.cat([x, network.decode(network.encode(x).mode())]).cpu()


# --- the spec ------------------------------------------------------------------------------


def build_generator(config, num_classes: int = 0) -> torch.nn.Module:
    from udpm.networks.autoencoder import AutoencoderKL

    return AutoencoderKL(**{"image_channels": config.channels, **config.network})


def build_process(config):
    return None  # no diffusion in stage 1


def sample(pipe, seeds, noises, labels, options, callback=None, return_levels=False):
    from udpm.errors import UDPMError

    raise UDPMError(
        "an autoencoder reconstructs, it does not sample; train latent diffusion on it with "
        "'udpm train --method ldm --autoencoder CKPT'"
    )


def latent_shapes(pipe, options: dict) -> list[tuple]:
    return [pipe.network.latent_shape(pipe.image_shape)]


def validate(config) -> None:
    from udpm.errors import UDPMError

    ae = build_generator(config)
    ae.latent_shape((config.channels, config.resolution, config.resolution))
    if ae.image_channels != config.channels:
        raise UDPMError(
            f"network.image_channels is {ae.image_channels} but the data has {config.channels}"
        )


def describe(config) -> str:
    net, s = config.network, config.settings
    f = 2 ** (len(net.get("channel_mult", (1, 2, 4))) - 1)
    z = net.get("latent_channels", 4)
    side = config.resolution // f
    disc = f"patch D from step {s.disc_start}" if s.disc_weight > 0 else "no discriminator"
    return f"KL autoencoder f = {f}, latent {side}x{side}x{z}, KL weight {s.kl_weight}, {disc}"


SPEC = MethodSpec(
    name="autoencoder",
    settings=AutoencoderSettings,
    trainer="udpm.methods.autoencoder:AutoencoderMethod",
    build_process=build_process,
    build_generator=build_generator,
    sample=sample,
    latent_shapes=latent_shapes,
    describe=describe,
    validate=validate,
)
