"""DDGAN training (Xiao et al. 2022, "Tackling the generative learning trilemma with
denoising diffusion GANs", Sec. 3-4; NVlabs/denoising-diffusion-gan ``train_ddgan.py``).

Each step trains D then G, as NVlabs does:

- **D** on the real pair ``(x_{t-1}, x_t) ~ q(x_{t-1}, x_t | x_0)`` (drawn jointly) against
  the fake ``(x'_{t-1}, x_t)`` with ``x'_{t-1} ~ q(x_{t-1} | x_t, G(x_t, z, t))``; softplus
  losses, plus ``γ/2 · R1`` on the real ``x_{t-1}`` every ``lazy_r1`` steps (from step 0).
  Like NVlabs we do **not** multiply the lazy penalty by ``k`` (StyleGAN2 does): ``γ`` is
  NVlabs' ``r1_gamma`` as published, so its CIFAR-10 value 0.02 means what it meant there.
- **G** on fresh ``t``, ``x_t ~ q(x_t | x_0)`` and ``z``: the non-saturating loss of D on
  its fake pair. (NVlabs redraws the pair for G's step; only its ``x_t`` is used, whose
  marginal is ``q(x_t | x_0)``, so it is drawn directly.)

G and D have their own Adam (``settings.optim`` for G, ``lr_d`` for D, the same betas) and a
cosine decay to ``lr_min`` over ``config.steps`` (NVlabs' ``CosineAnnealingLR``, eta_min
1e-5), after an optional linear warm-up.
"""

from __future__ import annotations

import math

import torch

from udpm.config.settings import DDGANSettings
from udpm.errors import UDPMError
from udpm.methods.base import Method
from udpm.methods.spec import MethodSpec, SampleResult, image_shape
from udpm.objectives.adversarial import discriminator_loss, generator_adversarial, lazy_r1_due
from udpm.objectives.ddgan import fake_prev, joint_pair, pair_input, real_logits_r1

__all__ = ["SPEC", "DDGANMethod", "DDGANSettings"]


# --- parts -----------------------------------------------------------------------------------


def build_process(config):
    from udpm.processes.schedules import ddgan_process

    s = config.settings
    return ddgan_process(s.T, s.beta_min, s.beta_max)


def build_generator(config, num_classes: int = 0) -> torch.nn.Module:
    """``G(x_t, time, labels, z=z) -> x̂_0``: the U-Net at full size with ``z`` and tanh."""
    from udpm.networks import UNet

    kwargs = dict(config.network)
    kwargs.setdefault("image_channels", config.channels)
    kwargs.update(
        num_classes=num_classes if config.class_conditional else 0,
        out_factor=1,
        z_dim=config.settings.z_dim,
        out_activation="tanh",
    )
    return UNet(**kwargs)


def build_discriminator(config, num_classes: int = 0) -> torch.nn.Module:
    """``D(cat(x_{t-1}, x_t), time, labels)``: UDPM's D on ``2C`` channels, all at full size."""
    from udpm.networks import Discriminator

    kwargs = dict(config.discriminator)
    kwargs.update(
        image_channels=2 * config.channels,
        resolution=config.resolution,
        num_levels=1,
        num_classes=num_classes if config.class_conditional else 0,
    )
    return Discriminator(**kwargs)


def cosine_lr(step: int, total: int, lr: float, lr_min: float, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then ``lr_min + (lr - lr_min)(1 + cos(π s/S))/2``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


# --- training --------------------------------------------------------------------------------


class DDGANMethod(Method):
    """Generator ``G`` (the U-Net with ``z``) and pair discriminator ``D``; see the module doc.

    Randomness: ``noise_gen`` draws the times, forward noise, ``z`` and posterior noise of the
    whole global batch, seeded alike on every rank; each rank keeps its rows
    (``Method.rank_rows``), so a run on W processes sees the noise of one.
    """

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
        super().__init__(config, device, num_classes, autocast_dtype)
        self.settings = s = config.settings
        self.process = build_process(config)
        self.modules["G"] = build_generator(config, num_classes).to(self.device)
        self.modules["D"] = build_discriminator(config, num_classes).to(self.device)
        self._make_optimizers({"G": s.optim.lr, "D": s.lr_d})
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)

    def set_lr(self, step: int) -> None:
        """The base schedule, except that the cosine ends at ``lr_min`` (NVlabs), not 0."""
        optim = self.settings.optim
        if optim.decay != "cosine":
            return super().set_lr(step)
        for name, opt in self.optimizers.items():
            base = self.base_lrs[name]
            lr = cosine_lr(
                step, self.config.steps, base, min(self.settings.lr_min, base), optim.warmup
            )
            for group in opt.param_groups:
                group["lr"] = lr

    def _randn(self, shape, n: int) -> torch.Tensor:
        return self.rank_rows(lambda m: torch.randn((m, *shape), generator=self.noise_gen), n)

    def _times(self, n: int) -> torch.Tensor:
        T = self.process.num_timesteps
        return self.rank_rows(lambda m: torch.randint(0, T, (m,), generator=self.noise_gen), n)

    def _z(self, n: int) -> torch.Tensor | None:
        return self._randn((self.settings.z_dim,), n) if self.settings.z_dim else None

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        """One D step on joint real pairs, then one G step on fresh draws."""
        n, shape = x0.shape[0], x0.shape[1:]
        t = self._times(n)
        x_prev, x_t = joint_pair(self.process, x0, t, self._randn(shape, n), self._randn(shape, n))
        parts = self.micro_batches(x_prev, x_t, t, labels, self._z(n), self._randn(shape, n))
        logs = self._discriminator_step(parts, lazy_r1_due(step, self.settings.lazy_r1))

        t = self._times(n)
        x_t = self.process.q_sample(x0, t, noise=self._randn(shape, n))
        parts = self.micro_batches(x_t, t, labels, self._z(n), self._randn(shape, n))
        D = self.modules["D"]
        D.requires_grad_(False)  # G's step needs D's input gradient only
        try:
            terms = self.optimise("G", lambda i: self._generator_loss(parts[i]), "the G loss")
        finally:
            D.requires_grad_(True)
        return {**logs, "loss_g": terms.pop("loss"), **terms}

    def _generate(self, x_t, t, labels, z, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """``(time, x'_{t-1})``: the fake from ``x̂_0 = G(x_t, z, t)`` and the posterior."""
        time = self.process.network_time(t)
        with self.autocast():
            x0_hat = self.net("G")(x_t, time, labels, z=z).float()
        return time, fake_prev(self.process, x_t, x0_hat, t, noise)

    def _discriminator_step(self, parts, with_r1: bool) -> dict:
        gamma = self.settings.r1_gamma
        with_r1 = with_r1 and gamma > 0
        D = self.net("D")

        def micro_loss(i):
            x_prev, x_t, t, labels, z, noise = parts[i]
            with torch.no_grad():
                time, fake = self._generate(x_t, t, labels, z, noise)
            with self.autocast():
                logits_real, r1 = real_logits_r1(D, x_prev, x_t, time, labels, with_r1)
                logits_fake = D(pair_input(fake, x_t), time, labels).float()
            loss = discriminator_loss(logits_real, logits_fake)
            if r1 is None:
                return loss, {}
            return loss + 0.5 * gamma * r1, {"r1": r1}

        terms = self.optimise("D", micro_loss, "the D loss")
        return {"loss_d": terms.pop("loss"), **terms}

    def _generator_loss(self, part):
        x_t, t, labels, z, noise = part
        time, fake = self._generate(x_t, t, labels, z, noise)
        # The plain D: its weights take no gradient here, so DDP has nothing to reduce.
        with self.autocast():
            logits = self.modules["D"](pair_input(fake, x_t), time, labels).float()
        return generator_adversarial(logits), {}


# --- the spec: how the rest of the package sees DDGAN ----------------------------------------


def latent_shapes(pipe, options: dict) -> list[tuple]:
    from udpm.samplers.ddgan import latent_shapes as shapes

    s = pipe.config.settings
    return shapes(image_shape(pipe.config), s.T, s.z_dim)


def sample(pipe, seeds, noises, labels, options, callback=None, return_levels=False):
    """One batch through :func:`udpm.samplers.ddgan.sample_ddgan`; image ``i`` uses ``seeds[i]``."""
    from udpm.noise import seeded_noise
    from udpm.samplers.ddgan import sample_ddgan

    if noises is None:
        noises = seeded_noise(latent_shapes(pipe, options), list(seeds))
    out = sample_ddgan(
        pipe.network,
        pipe.process,
        image_shape(pipe.config),
        noises=noises,
        class_labels=labels,
        callback=callback,
        z_dim=pipe.config.settings.z_dim,
        return_levels=return_levels,
    )
    return SampleResult(*out) if return_levels else SampleResult(out)


def describe(config) -> str:
    s = config.settings
    return (
        f"{s.T} denoising steps (NFE {s.T}), z in R^{s.z_dim}, "
        f"R1 gamma {s.r1_gamma} every {s.lazy_r1} steps"
    )


def validate(config) -> None:
    s = config.settings
    if s.T < 1 or s.z_dim < 0 or s.lazy_r1 < 1 or s.r1_gamma < 0 or s.lr_d <= 0:
        raise UDPMError(
            "ddgan needs T >= 1, z_dim >= 0, lazy_r1 >= 1, r1_gamma >= 0 and lr_d > 0; got "
            f"T={s.T}, z_dim={s.z_dim}, lazy_r1={s.lazy_r1}, r1_gamma={s.r1_gamma}, "
            f"lr_d={s.lr_d}"
        )
    build_process(config)  # the schedule's own checks (beta_min < beta_max)
    build_discriminator(config)  # D's size checks, before a run directory exists


SPEC = MethodSpec(
    name="ddgan",
    settings=DDGANSettings,
    trainer="udpm.methods.ddgan:DDGANMethod",
    build_process=build_process,
    build_generator=build_generator,
    sample=sample,
    latent_shapes=latent_shapes,
    describe=describe,
    validate=validate,
    has_levels=True,  # x̂_0 of every step, (N, T, C, H, W)
)
