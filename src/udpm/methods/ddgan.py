"""DDGAN training (Xiao et al. 2022, "Tackling the generative learning trilemma with
denoising diffusion GANs", Algorithm 1; NVlabs/denoising-diffusion-gan ``train_ddgan.py``).

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

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from udpm.errors import UDPMError
from udpm.methods.base import Method
from udpm.methods.spec import MethodSpec, SampleResult, image_shape
from udpm.objectives.adversarial import discriminator_loss, generator_adversarial, lazy_r1_due
from udpm.objectives.ddgan import fake_prev, joint_pair, pair_input, real_logits_r1

try:  # the framework's optimiser settings, once they land
    from udpm.config import Optim
except ImportError:  # until then, the same fields here

    @dataclass(frozen=True)
    class Optim:
        lr: float = 1e-4
        betas: tuple[float, float] = (0.5, 0.9)
        warmup: int = 0
        grad_clip: float | None = None
        weight_decay: float = 0.0


@dataclass(frozen=True)
class DDGANSettings:
    """DDGAN's own config; defaults are the paper's CIFAR-10 settings (NVlabs' script)."""

    T: int = 4  # denoising steps (= NFE); 4 on CIFAR-10
    beta_min: float = 0.1  # VP SDE's β(t) at t = 0 ...
    beta_max: float = 20.0  # ... and at t = 1 (processes/schedules.py)
    z_dim: int = 100  # latent of G(x_t, z, t); NVlabs' nz
    r1_gamma: float = 0.02  # R1 weight γ; the penalty added is γ/2 · E||∇D||²
    lazy_r1: int = 15  # R1 on steps 0, k, 2k, ..; 1 = every step
    lr_d: float = 1.25e-4  # D's learning rate (G's is optim.lr)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    lr_min: float = 1e-5  # the cosine's floor, for G and D
    optim: Optim = field(default_factory=lambda: Optim(lr=1.6e-4, betas=(0.5, 0.9), warmup=0))

    def __post_init__(self):
        if isinstance(self.optim, dict):  # from YAML: over the paper's optimiser
            paper = DDGANSettings.__dataclass_fields__["optim"].default_factory()
            object.__setattr__(self, "optim", dataclasses.replace(paper, **self.optim))
        if self.T < 1 or self.z_dim < 0 or self.lazy_r1 < 1 or self.r1_gamma < 0:
            raise UDPMError(
                "ddgan needs T >= 1, z_dim >= 0, lazy_r1 >= 1 and r1_gamma >= 0; got "
                f"T={self.T}, z_dim={self.z_dim}, lazy_r1={self.lazy_r1}, r1_gamma={self.r1_gamma}"
            )
        if self.lr_schedule not in ("cosine", "constant"):
            raise UDPMError(f"lr_schedule must be cosine or constant, got {self.lr_schedule!r}")


def settings_of(config) -> DDGANSettings:
    """``config.settings`` as :class:`DDGANSettings`, read defensively.

    Until the framework's typed config lands, a dict (``config.settings``, or else the
    interim ``config.diffusion``) is accepted; unknown keys are an error.
    """
    raw = getattr(config, "settings", None)
    if isinstance(raw, DDGANSettings):
        return raw
    if raw is None:
        raw = getattr(config, "diffusion", None) or {}
    if dataclasses.is_dataclass(raw):
        raw = dataclasses.asdict(raw)
    raw = dict(raw)
    known = {f.name for f in dataclasses.fields(DDGANSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UDPMError(f"unknown ddgan setting(s): {', '.join(unknown)}")
    return DDGANSettings(**raw)


# --- parts -----------------------------------------------------------------------------------


def build_process(config):
    from udpm.processes.schedules import ddgan_process

    s = settings_of(config)
    return ddgan_process(s.T, s.beta_min, s.beta_max)


def build_generator(config, num_classes: int = 0) -> torch.nn.Module:
    """``G(x_t, time, labels, z=z) -> x̂_0``: the U-Net at full size with ``z`` and tanh."""
    from udpm.networks import UNet

    kwargs = dict(config.network)
    kwargs.setdefault("image_channels", config.channels)
    kwargs.update(
        num_classes=num_classes if config.class_conditional else 0,
        out_factor=1,
        z_dim=settings_of(config).z_dim,
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


def build_networks(config, num_classes: int = 0) -> dict[str, torch.nn.Module]:
    return {
        "G": build_generator(config, num_classes),
        "D": build_discriminator(config, num_classes),
    }


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
        self.settings = s = settings_of(config)
        self.process = build_process(config)
        self.modules = {
            k: m.to(self.device) for k, m in build_networks(config, num_classes).items()
        }
        rates = {"G": s.optim.lr, "D": s.lr_d}
        self.optimizers = {
            k: torch.optim.Adam(
                m.parameters(),
                lr=rates[k],
                betas=tuple(s.optim.betas),
                weight_decay=s.optim.weight_decay,
            )
            for k, m in self.modules.items()
        }
        self.base_lr = rates
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)

    def set_lr(self, step: int) -> None:
        s = self.settings
        for name, opt in self.optimizers.items():
            base = self.base_lr[name]
            lr = (
                cosine_lr(step, self.config.steps, base, min(s.lr_min, base), s.optim.warmup)
                if s.lr_schedule == "cosine"
                else base * min(1.0, (step + 1) / max(s.optim.warmup, 1))
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

    def extra_state(self) -> dict:
        return {"noise_gen": self.noise_gen.get_state()}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.noise_gen.set_state(state["noise_gen"])

    def sample(self, network, seeds, labels):
        """Training-time preview grids: the full ``T``-step chain, one seed per image."""
        from udpm.noise import seeded_noise
        from udpm.samplers.ddgan import latent_shapes, sample_ddgan

        shape = image_shape(self.config)
        shapes = latent_shapes(shape, self.process.num_timesteps, self.settings.z_dim)
        noises = seeded_noise(shapes, list(seeds))
        return sample_ddgan(
            network,
            self.process,
            shape,
            noises=noises,
            class_labels=labels,
            z_dim=self.settings.z_dim,
        )


# --- the spec --------------------------------------------------------------------------------


def _sample(pipe, noise_source, class_labels, options, callback) -> SampleResult:
    from udpm.samplers.ddgan import run_chain

    z_dim = settings_of(pipe.config).z_dim
    shape = image_shape(pipe.config)
    x, x0_hats = run_chain(
        pipe.network, pipe.process, shape, noise_source, class_labels, callback, z_dim
    )
    return SampleResult(images=x, levels=torch.stack(x0_hats, dim=1))


def _latent_shapes(pipe, options) -> list[tuple]:
    from udpm.samplers.ddgan import latent_shapes

    s = settings_of(pipe.config)
    return latent_shapes(image_shape(pipe.config), s.T, s.z_dim)


def _describe(config) -> str:
    s = settings_of(config)
    return (
        f"DDGAN: {s.T} denoising steps (NFE {s.T}), z in R^{s.z_dim}, "
        f"R1 gamma {s.r1_gamma} every {s.lazy_r1} steps"
    )


SPEC = MethodSpec(
    name="ddgan",
    settings=DDGANSettings,
    trainer="udpm.methods.ddgan:DDGANMethod",
    build_process=build_process,
    build_networks=build_networks,
    sample=_sample,
    latent_shapes=_latent_shapes,
    sampler_options={},
    describe=_describe,
    has_levels=True,  # x̂_0 of every step
    deterministic_given_noise=True,
)
