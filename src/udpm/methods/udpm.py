"""UDPM training (Algorithm 1 of the UDPM paper, with the design page's loss terms)."""

from __future__ import annotations

import torch

from udpm.methods.base import Method
from udpm.objectives.udpm import (
    Perceptual,
    discriminator_loss,
    generator_adversarial,
    instance_noise_std,
    level_targets,
    r1_penalty,
)


class UDPMMethod(Method):
    """Generator ``G = f_θ`` shared by all levels and a level-conditional discriminator ``D``.

    Randomness: ``level_gen`` draws the level of each step and is seeded identically on
    every rank, so all ranks of a step train the same level shape; ``noise_gen`` draws the
    forward-process and instance noise and is seeded per rank.
    """

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, rank=0, warn=None):
        super().__init__(config, device, num_classes, autocast_dtype)
        from udpm.networks import Discriminator
        from udpm.pipeline import build_network, build_process

        self.process = build_process(config)
        self.modules["G"] = build_network(config, num_classes).to(self.device)
        if any(w > 0 for w in config.lambda_adv):
            disc = dict(config.discriminator)
            disc.setdefault("image_channels", config.channels)
            disc.setdefault("resolution", config.resolution)
            disc["num_levels"] = self.process.levels
            disc["num_classes"] = num_classes if config.class_conditional else 0
            self.modules["D"] = Discriminator(**disc).to(self.device)
        self._make_optimizers()
        uses_perceptual = any(w > 0 for w in config.lambda_perceptual)
        kwargs = {} if warn is None else {"warn": warn}
        self.perceptual = Perceptual(
            config.perceptual if uses_perceptual else "none", self.device, **kwargs
        )
        self.level_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1 + rank)

    def draw_level(self) -> int:
        return int(torch.randint(1, self.process.levels + 1, (1,), generator=self.level_gen))

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.noise_gen).to(self.device)

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        """One D step and one G step at a single level drawn uniformly."""
        cfg, L = self.config, self.process.levels
        l = self.draw_level()
        f = self.process.factor**l
        noise = self._randn((*x0.shape[:2], x0.shape[2] // f, x0.shape[3] // f))
        x_l, y, scale = level_targets(self.process, x0, l, noise)
        t = torch.full((x0.shape[0],), self.process.level_time(l), device=self.device)
        G, D = self.modules["G"], self.modules.get("D")
        with self.autocast():
            y_hat = G(x_l, t, labels).float() / scale
        logs = {"level": l}
        lam_adv = cfg.lambda_adv[l - 1]
        if D is not None and lam_adv > 0:
            sd = instance_noise_std(
                step, cfg.instance_noise, cfg.instance_noise_decay, cfg.instance_noise_every
            )
            noise_real, noise_fake = self._randn(y.shape) * sd, self._randn(y.shape) * sd
            logs["loss_d"] = self._discriminator_step(
                D, y + noise_real, y_hat.detach() + noise_fake, t, labels, l
            )
            D.requires_grad_(False)  # G's step needs D's input gradient only
        loss = y_hat.new_zeros(())
        if cfg.lambda_l1[l - 1] > 0:
            logs["l1"] = float((l1 := (y_hat - y).abs().mean()).detach())
            loss = loss + cfg.lambda_l1[l - 1] * l1
        if cfg.lambda_perceptual[l - 1] > 0 and self.perceptual.available:
            logs["perceptual"] = float((per := self.perceptual(y_hat, y)).detach())
            loss = loss + cfg.lambda_perceptual[l - 1] * per
        if D is not None and lam_adv > 0:
            with self.autocast():
                adv = generator_adversarial(D(y_hat + noise_fake, t, labels).float())
            logs["adv_g"] = float(adv.detach())
            loss = loss + lam_adv * adv
        logs["loss_g"] = self.optimise("G", loss, f"the generator loss at level {l}/{L}")
        if D is not None:
            D.requires_grad_(True)
        return logs

    def _discriminator_step(self, D, real, fake, t, labels, l) -> float:
        r1_weight = self.config.r1[l - 1]
        real = real.detach().requires_grad_(r1_weight > 0)
        with self.autocast():
            logits_real = D(real, t, labels).float()
            logits_fake = D(fake, t, labels).float()
        loss = discriminator_loss(logits_real, logits_fake)
        if r1_weight > 0:
            loss = loss + 0.5 * r1_weight * r1_penalty(logits_real, real)
        return self.optimise("D", loss, f"the discriminator loss at level {l}")

    def extra_state(self) -> dict:
        return {"level_gen": self.level_gen.get_state(), "noise_gen": self.noise_gen.get_state()}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.level_gen.set_state(state["level_gen"])
            self.noise_gen.set_state(state["noise_gen"])

    def sample(self, network, seeds, labels):
        from udpm.samplers.udpm import sample_udpm, seeded_noises

        shape = (self.config.channels, self.config.resolution, self.config.resolution)
        noises = seeded_noises(self.process, shape, seeds)
        return sample_udpm(network, self.process, shape, noises=noises, class_labels=labels)
