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
    every rank, so all ranks of a step train the same level shape (one network graph per
    step, and the DDP gradient average is over one level's loss, as on one process).
    ``noise_gen`` draws the forward-process and instance noise of the whole global batch,
    also seeded alike; each rank keeps its rows (``Method.rank_rows``).
    """

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
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
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)

    def draw_level(self) -> int:
        return int(torch.randint(1, self.process.levels + 1, (1,), generator=self.level_gen))

    def _randn(self, shape, local_size: int) -> torch.Tensor:
        """Standard normal noise ``(local_size, *shape)``: this rank's rows of the global draw."""
        return self.rank_rows(
            lambda n: torch.randn((n, *shape), generator=self.noise_gen), local_size
        )

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        """One D step and one G step at a single level drawn uniformly.

        With micro-batches (gradient accumulation) D's step needs every micro-batch's fake
        before G's step may start, so G's forward runs twice per micro-batch: without a
        graph for D, with one for G. With one micro-batch the graph is kept and reused.
        """
        cfg, L, n = self.config, self.process.levels, x0.shape[0]
        l = self.draw_level()
        f = self.process.factor**l
        noise = self._randn((x0.shape[1], x0.shape[2] // f, x0.shape[3] // f), n)
        x_l, y, scale = level_targets(self.process, x0, l, noise)
        t = torch.full((n,), self.process.level_time(l), device=self.device)
        adversarial = "D" in self.modules and cfg.lambda_adv[l - 1] > 0
        noise_real = noise_fake = None
        if adversarial:
            sd = instance_noise_std(
                step, cfg.instance_noise, cfg.instance_noise_decay, cfg.instance_noise_every
            )
            noise_real, noise_fake = (
                self._randn(y.shape[1:], n) * sd,
                self._randn(y.shape[1:], n) * sd,
            )
        parts = self.micro_batches(x_l, y, t, labels, noise_real, noise_fake)
        kept = [None] * len(parts)  # y_hat with its graph, when D's step may hand it over
        logs = {"level": l}
        if adversarial:
            logs["loss_d"] = self._discriminator_step(parts, kept, scale, l)
        D = self.modules.get("D")
        if D is not None:
            D.requires_grad_(False)  # G's step needs D's input gradient only
        try:
            terms = self.optimise(
                "G",
                lambda i: self._generator_loss(parts[i], kept[i], scale, l, adversarial),
                f"the generator loss at level {l}/{L}",
            )
        finally:
            if D is not None:
                D.requires_grad_(True)
        logs["loss_g"] = terms.pop("loss")
        return {**logs, **terms}

    def _generate(self, part, scale, grad: bool) -> torch.Tensor:
        """``ŷ = G(x_l, t) / sum(w)^{l-1}`` for one micro-batch."""
        x_l, _, t, labels, _, _ = part
        with torch.set_grad_enabled(grad), self.autocast():
            return self.net("G")(x_l, t, labels).float() / scale

    def _discriminator_step(self, parts, kept, scale, l) -> float:
        r1_weight = self.config.r1[l - 1]
        D = self.net("D")

        def micro_loss(i):
            _, y, t, labels, noise_real, noise_fake = parts[i]
            y_hat = self._generate(parts[i], scale, grad=len(parts) == 1)
            if len(parts) == 1:
                kept[i] = y_hat
            real = (y + noise_real).detach().requires_grad_(r1_weight > 0)
            fake = y_hat.detach() + noise_fake
            with self.autocast():
                logits_real = D(real, t, labels).float()
                logits_fake = D(fake, t, labels).float()
            loss = discriminator_loss(logits_real, logits_fake)
            if r1_weight > 0:
                loss = loss + 0.5 * r1_weight * r1_penalty(logits_real, real)
            return loss, {}

        return self.optimise("D", micro_loss, f"the discriminator loss at level {l}")["loss"]

    def _generator_loss(self, part, y_hat, scale, l, adversarial):
        """G's loss on one micro-batch: L1, perceptual and adversarial terms of level ``l``."""
        cfg = self.config
        _, y, t, labels, _, noise_fake = part
        if y_hat is None:
            y_hat = self._generate(part, scale, grad=True)
        loss, terms = y_hat.new_zeros(()), {}
        if cfg.lambda_l1[l - 1] > 0:
            terms["l1"] = (y_hat - y).abs().mean()
            loss = loss + cfg.lambda_l1[l - 1] * terms["l1"]
        if cfg.lambda_perceptual[l - 1] > 0 and self.perceptual.available:
            terms["perceptual"] = self.perceptual(y_hat, y)
            loss = loss + cfg.lambda_perceptual[l - 1] * terms["perceptual"]
        if adversarial:
            # The plain D: its weights take no gradient here, so DDP has nothing to reduce.
            with self.autocast():
                logits = self.modules["D"](y_hat + noise_fake, t, labels).float()
            terms["adv_g"] = generator_adversarial(logits)
            loss = loss + cfg.lambda_adv[l - 1] * terms["adv_g"]
        return loss, terms

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
