"""UDPM (Abu-Hussein and Giryes 2024): its spec, and its training (Algorithm 1, Sec. 3.3)."""

from __future__ import annotations

import torch

from udpm.config.settings import UDPMSettings
from udpm.methods.base import Method
from udpm.methods.spec import MethodSpec, SampleResult, build_unet
from udpm.objectives.udpm import (
    Perceptual,
    discriminator_loss,
    feature_matching,
    generator_adversarial,
    instance_noise_std,
    level_targets,
    mode_seeking,
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

    random_streams = ("level_gen", "noise_gen")

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
        super().__init__(config, device, num_classes, autocast_dtype)
        from udpm.networks import Discriminator

        s = self.settings = config.settings
        self.process = build_process(config)
        self.modules["G"] = build_generator(config, num_classes).to(self.device)
        if any(w > 0 for w in s.lambda_adv):
            disc = dict(config.discriminator)
            disc.setdefault("image_channels", config.channels)
            disc.setdefault("resolution", config.resolution)
            disc["num_levels"] = self.process.levels
            disc["num_classes"] = num_classes if config.class_conditional else 0
            self.modules["D"] = Discriminator(**disc).to(self.device)
        self._make_optimizers()
        uses_perceptual = any(w > 0 for w in s.lambda_perceptual)
        kwargs = {} if warn is None else {"warn": warn}
        self.perceptual = Perceptual(
            s.perceptual if uses_perceptual else "none", self.device, **kwargs
        )
        self.level_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)

    def draw_level(self) -> int:
        weights = self.settings.level_weights
        if weights is None:
            return int(torch.randint(1, self.process.levels + 1, (1,), generator=self.level_gen))
        probs = torch.tensor(weights, dtype=torch.float64)
        return int(torch.multinomial(probs, 1, generator=self.level_gen)) + 1

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
        cfg, L, n = self.settings, self.process.levels, x0.shape[0]
        l = self.draw_level()
        f = self.process.factor**l
        noise = self._randn((x0.shape[1], x0.shape[2] // f, x0.shape[3] // f), n)
        x_l, y, scale = level_targets(self.process, x0, l, noise)
        t = torch.full((n,), self.process.level_time(l), device=self.device)
        adversarial = "D" in self.modules and cfg.lambda_adv[l - 1] > 0
        noise_real = noise_fake = None
        if adversarial:
            sd = instance_noise_std(
                step,
                cfg.instance_noise,
                cfg.instance_noise_decay,
                cfg.instance_noise_every,
                cfg.instance_noise_end,
                self.config.steps,
            )
            noise_real, noise_fake = (
                self._randn(y.shape[1:], n) * sd,
                self._randn(y.shape[1:], n) * sd,
            )
        parts = self.micro_batches(x_l, y, t, labels, noise_real, noise_fake)
        kept = [None] * len(parts)  # y_hat with its graph, when D's step may hand it over
        logs = {"level": l}
        if adversarial:
            lazy = step % cfg.r1_every == 0
            logs["loss_d"] = self._discriminator_step(parts, kept, scale, l, lazy)
        D = self.modules.get("D")
        if D is not None:
            D.requires_grad_(False)  # G's step needs D's input gradient only
            if cfg.d_eval_in_g_step:
                D.eval()
        try:
            terms = self.optimise(
                "G",
                lambda i: self._generator_loss(parts[i], kept[i], scale, l, adversarial),
                f"the generator loss at level {l}/{L}",
            )
        finally:
            if D is not None:
                D.requires_grad_(True)
                D.train()
        logs["loss_g"] = terms.pop("loss")
        return {**logs, **terms}

    def _generate(self, part, scale, grad: bool) -> torch.Tensor:
        """``ŷ = G(x_l, t) / sum(w)^{l-1}`` for one micro-batch."""
        x_l, _, t, labels, _, _ = part
        with torch.set_grad_enabled(grad), self.autocast():
            return self.net("G")(x_l, t, labels).float() / scale

    def _discriminator_step(self, parts, kept, scale, l, with_r1: bool = True) -> float:
        # Lazy R1: on every k-th step only, weighted by k (its mean strength is unchanged).
        k = self.settings.r1_every
        r1_weight = self.settings.r1[l - 1] * k if with_r1 else 0.0
        gan_scale = 0.5 if self.settings.d_loss == "mean" else 1.0
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
            # "mean": the authors' ½(L_real + L_fake) + (γ/2)·R1; "sum": without the ½.
            loss = gan_scale * discriminator_loss(logits_real, logits_fake)
            if r1_weight > 0:
                loss = loss + 0.5 * r1_weight * r1_penalty(logits_real, real)
            return loss, {}

        return self.optimise("D", micro_loss, f"the discriminator loss at level {l}")["loss"]

    def _generator_loss(self, part, y_hat, scale, l, adversarial):
        """G's loss on one micro-batch: L1, perceptual and adversarial terms of level ``l``."""
        cfg = self.settings
        x_l, y, t, labels, _, noise_fake = part
        if y_hat is None:
            y_hat = self._generate(part, scale, grad=True)
        loss, terms = y_hat.new_zeros(()), {}
        if cfg.lambda_l1[l - 1] > 0:
            terms["l1"] = (y_hat - y).abs().mean()
            loss = loss + cfg.lambda_l1[l - 1] * terms["l1"]
        if cfg.lambda_perceptual[l - 1] > 0 and self.perceptual.available:
            terms["perceptual"] = self.perceptual(y_hat, y)
            loss = loss + cfg.lambda_perceptual[l - 1] * terms["perceptual"]
        if cfg.lambda_ms[l - 1] > 0:
            terms["ms"] = mode_seeking(y_hat, x_l, y if cfg.ms_bounded else None)
            loss = loss + cfg.lambda_ms[l - 1] * terms["ms"]
        if adversarial:
            # The plain D: its weights take no gradient here, so DDP has nothing to reduce.
            D, fm = self.modules["D"], cfg.lambda_fm[l - 1] > 0
            with self.autocast():
                out = D(y_hat + noise_fake, t, labels, return_features=fm)
            logits = (out[0] if fm else out).float()
            terms["adv_g"] = generator_adversarial(logits)
            loss = loss + cfg.lambda_adv[l - 1] * terms["adv_g"]
            if fm:
                # The same instance noise on both, so only ŷ - y separates them.
                with torch.no_grad(), self.autocast():
                    _, real_features = D(y + noise_fake, t, labels, return_features=True)
                terms["fm"] = feature_matching(out[1], real_features)
                loss = loss + cfg.lambda_fm[l - 1] * terms["fm"]
        return loss, terms

    def diagnostics(self, images: torch.Tensor, data_uint8: torch.Tensor) -> dict:
        """Collapse, visible while training: the top level's spread against the data's.

        ``top_std_ratio``: per-pixel std of the samples' coarsest level (``H^{L-1} x_0``)
        over the data's; ``nn_ratio``: median nearest-neighbour distance among the samples
        over that among as many data images. Both are near 1 without mode collapse.
        """
        from udpm.eval.diversity import diversity_ratios
        from udpm.images import from_uint8

        L = self.process.levels
        n = len(images)
        gen = torch.Generator().manual_seed(0)
        real = from_uint8(data_uint8[torch.randperm(len(data_uint8), generator=gen)[:n]])
        top = [self.process.degrade(x.float().cpu(), L - 1) for x in (images, real)]
        return diversity_ratios(*top)


# --- the spec: how the rest of the package sees UDPM ---------------------------------------


def build_process(config):
    from udpm.operators import Downsample
    from udpm.processes.upsampling import UpsamplingProcess

    s = config.settings
    kernel = None if s.kernel is None else torch.tensor(s.kernel, dtype=torch.float64)
    return UpsamplingProcess(
        s.alphas, s.sigmas, Downsample(s.factor, kernel), scalar_posterior=s.scalar_posterior
    )


def build_generator(config, num_classes: int = 0) -> torch.nn.Module:
    return build_unet(config, num_classes, out_factor=config.settings.factor)


def latent_shapes(pipe, options: dict) -> list[tuple]:
    from udpm.samplers.udpm import level_shapes

    return level_shapes(pipe.process, pipe.image_shape)


def sample(pipe, seeds, noises, labels, options, callback=None, return_levels=False):
    from udpm.samplers.udpm import sample_udpm, seeded_noises

    seeds = list(seeds)
    if noises is None:
        noises = seeded_noises(pipe.process, pipe.image_shape, seeds)
    out = sample_udpm(
        pipe.network,
        pipe.process,
        pipe.image_shape,
        noises=noises,
        class_labels=labels,
        callback=callback,
        return_levels=return_levels,
    )
    if return_levels:
        return SampleResult(out[0], torch.stack(out[1], 1))
    return SampleResult(out)


def describe(config) -> str:
    s = config.settings
    return f"alphas {list(s.alphas)}, sigmas {list(s.sigmas)}, factor {s.factor}"


def validate(config) -> None:
    from udpm.errors import UDPMError

    s = config.settings
    build_process(config).check_resolution(config.resolution)
    names = (
        "lambda_l1",
        "lambda_perceptual",
        "lambda_adv",
        "lambda_fm",
        "lambda_ms",
        "r1",
        "level_weights",
    )
    for name in names:
        values = getattr(s, name)
        if values is not None and len(values) != s.levels:
            raise UDPMError(f"{name} needs one entry per level ({s.levels}), got {len(values)}")
    if s.r1_every < 1:
        raise UDPMError(f"r1_every must be at least 1, got {s.r1_every}")
    if s.level_weights is not None and (min(s.level_weights) < 0 or sum(s.level_weights) <= 0):
        raise UDPMError(
            f"level_weights must be non-negative with a positive sum: {s.level_weights}"
        )


SPEC = MethodSpec(
    name="udpm",
    settings=UDPMSettings,
    trainer="udpm.methods.udpm:UDPMMethod",
    build_process=build_process,
    build_generator=build_generator,
    sample=sample,
    latent_shapes=latent_shapes,
    describe=describe,
    validate=validate,
    has_levels=True,
)
