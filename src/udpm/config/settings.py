"""Each method's own settings, with its paper's optimiser: one frozen dataclass per method.

Every method runs with its own recipe, never with another method's: UDPM's adversarial
Adam settings do not leak into DDPM, and the defaults here are the papers' (cited per field).
Presets (``udpm.config.presets``) change them only where a CPU budget forces it, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Parameterization = Literal["eps", "x0", "v"]
GaussianSampler = Literal["ancestral", "ddim"]


@dataclass(frozen=True)
class Optim:
    """Adam (or AdamW with ``weight_decay``) and its learning-rate schedule.

    ``warmup`` steps of linear warm-up, then constant (``decay="none"``) or cosine decay to 0
    at the run's last step (``decay="cosine"``, DDGAN's choice).
    """

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)  # torch's default
    weight_decay: float = 0.0
    warmup: int = 0
    grad_clip: float | None = None  # max global gradient norm per network; None: no clipping
    decay: Literal["none", "cosine"] = "none"


# The UDPM authors' code (``train_DDP.py``): Adam with torch's default betas, lr 1e-4 for G
# and D, 5k warm-up steps, no gradient clipping.
UDPM_OPTIM = Optim(lr=1e-4, betas=(0.9, 0.999), warmup=5000, grad_clip=None)


@dataclass(frozen=True)
class UDPMSettings:
    """UDPM (Abu-Hussein and Giryes 2024): the upsampling process and its loss weights.

    Loss at level ``l``: ``λ1[l]·L1 + λp[l]·LPIPS + λa[l]·softplus(-D(ŷ + n))`` (Sec. 3.3);
    one entry per level ``1..L``.
    """

    alphas: tuple[float, ...] = (0.5, 0.2, 1e-3)
    sigmas: tuple[float, ...] = (0.1, 0.2, 0.3)
    factor: int = 2  # γ
    kernel: list | None = None  # blur kernel (γ×γ); None = unit-norm box
    scalar_posterior: bool = False  # sample with the authors' 1/(a+b) covariance
    lambda_l1: tuple[float, ...] = (1.0, 1.0, 0.0)
    lambda_perceptual: tuple[float, ...] = (4.0, 4.0, 0.0)
    lambda_adv: tuple[float, ...] = (0.2, 0.5, 1.0)
    # Not in the paper: paired feature matching in D's own features (pix2pixHD), a
    # perceptual term for machines without LPIPS's VGG weights; 0 = off (the authors).
    lambda_fm: tuple[float, ...] = (0.0, 0.0, 0.0)
    # Not in the paper: the mode-seeking term of Mao et al. 2019 (MSGAN, Eq. 3), for levels
    # whose input is (almost) pure noise, where a GAN alone may collapse; 0 = off.
    lambda_ms: tuple[float, ...] = (0.0, 0.0, 0.0)
    ms_bounded: bool = False  # no reward past the data's own pair distance (objectives.udpm)
    r1: tuple[float, ...] = (0.025, 0.1, 0.4)  # R1 weight γ on D's real inputs, per level
    # D's loss: "mean" is the authors' ½(L_real + L_fake) + (γ/2)·R1; "sum" drops the ½ on
    # the GAN terms (R1 then weighs half as much relative to them).
    d_loss: Literal["mean", "sum"] = "mean"
    perceptual: Literal["lpips", "none"] = "lpips"  # lpips needs the extra and VGG weights
    instance_noise: float = 0.4  # std of the noise added to D's inputs ...
    instance_noise_decay: float = 0.99  # ... multiplied by this ...
    instance_noise_every: int = 1000  # ... every this many steps
    # Or, when set, anneal geometrically from instance_noise to this at the run's last step
    # (ties the schedule to the run's length; decay/every are then unused).
    instance_noise_end: float | None = None
    # Lazy R1 (Karras et al. 2020, StyleGAN2 App. B): the penalty on every k-th D step only,
    # weighted by k so its average strength is unchanged; 1 = every step.
    r1_every: int = 1
    d_eval_in_g_step: bool = False  # D in eval mode (dropout off) for G's step (authors: yes)
    level_weights: tuple[float, ...] | None = None  # level draw probabilities; None: uniform
    optim: Optim = UDPM_OPTIM

    @property
    def levels(self) -> int:
        return len(self.alphas)


@dataclass(frozen=True)
class DDPMSettings:
    """DDPM (Ho et al. 2020): T = 1000, linear β 1e-4..0.02, ε-prediction, ``L_simple``.

    Sampling defaults to the ancestral chain (Algorithm 2) with ``x̂₀`` clipped to [-1, 1],
    as Ho et al.'s code and diffusers' schedulers do; DDIM (Song et al. 2021) via ``sampler``.
    Optimiser: Adam with its default betas, lr 2e-4, 5000 warm-up steps, gradient norm
    clipped to 1 (Ho et al., Appendix B and their released code).
    """

    schedule: Literal["linear", "cosine"] = "linear"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    parameterization: Parameterization = "eps"
    weighting: Parameterization = "eps"  # L_simple
    sampler: GaussianSampler = "ancestral"
    sample_steps: int | None = None  # None: the full chain (ancestral) or 50 (DDIM)
    eta: float | None = None
    clip_x0: bool = True
    optim: Optim = Optim(lr=2e-4, betas=(0.9, 0.999), warmup=5000, grad_clip=1.0)


@dataclass(frozen=True)
class SimpleSettings:
    """simple diffusion (Hoogeboom et al. 2023): shifted cosine logSNR, v-prediction.

    The loss is ``L_ε = α² L_v`` (the paper trains the v-prediction with ε-weighting),
    multiscale from ``multiscale_base`` up. Optimiser: Adam with its default betas and
    gradient clipping as DDPM (the paper's own optimiser settings are not reproduced here).
    """

    schedule: Literal["cosine"] = "cosine"
    base_resolution: int = 64
    shift_interpolate: bool = False
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    parameterization: Parameterization = "v"
    weighting: Parameterization = "eps"
    multiscale_base: int | None = 32
    sampler: GaussianSampler = "ancestral"
    sample_steps: int | None = 256
    eta: float | None = None
    clip_x0: bool = True
    optim: Optim = Optim(lr=1e-4, betas=(0.9, 0.999), warmup=5000, grad_clip=1.0)


# NVlabs/denoising-diffusion-gan, CIFAR-10 command: Adam (0.5, 0.9), lr_G 1.6e-4, cosine
# decay (to DDGANSettings.lr_min), no warm-up, no gradient clipping.
DDGAN_OPTIM = Optim(lr=1.6e-4, betas=(0.5, 0.9), warmup=0, grad_clip=None, decay="cosine")


@dataclass(frozen=True)
class DDGANSettings:
    """DDGAN (Xiao et al. 2022): ``T`` denoising steps, each a conditional GAN ``G(x_t, z, t)``.

    Defaults are the paper's CIFAR-10 settings (NVlabs' ``train_ddgan.py`` command). D's loss
    is ``softplus(-D(real)) + softplus(D(fake)) + (γ/2)·R1`` with R1 on the real ``x_{t-1}``
    every ``lazy_r1`` steps, not multiplied by ``lazy_r1`` (as NVlabs).
    """

    T: int = 4  # denoising steps = NFE
    beta_min: float = 0.1  # the VP SDE's β(t) at t = 0 ...
    beta_max: float = 20.0  # ... and at t = 1 (udpm.processes.schedules)
    z_dim: int = 100  # the latent of G; NVlabs' nz
    r1_gamma: float = 0.02  # γ
    lazy_r1: int = 15  # R1 on steps 0, k, 2k, ..; 1 = every step
    lr_d: float = 1.25e-4  # D's learning rate; G's is optim.lr
    lr_min: float = 1e-5  # the cosine's floor for G and D (NVlabs' eta_min)
    optim: Optim = DDGAN_OPTIM


@dataclass(frozen=True)
class VDMSettings:
    """VDM (Kingma et al. 2021): a learned noise schedule trained on the variational bound.

    Defaults are the paper's CIFAR-10 ones (their code's ``configs/cifar10.py``): the learned
    monotone schedule from γ_min = -13.3 to γ_max = 5, the continuous-time bound (``T = 0``),
    Fourier features 2^6 and 2^7, the ancestral sampler with 1000 steps, and AdamW with
    betas (0.9, 0.99), weight decay 0.01, lr 2e-4, no warm-up and no clipping.
    """

    schedule: Literal["fixed", "scalar", "monotone"] = "monotone"
    gamma_min: float = -13.3  # γ_0 at initialisation (the constant for "fixed")
    gamma_max: float = 5.0  # γ_1 at initialisation
    schedule_features: int = 1024  # width of the monotone schedule network
    T: int = 0  # steps of the training bound; 0 = continuous time
    fourier: tuple[int, ...] = (6, 7)  # exponents n of the sin/cos(2^n 2π z) input features
    # The schedule's shape follows the gradient of the bound's variance (Appendix I.2), or,
    # with "bound", that of the bound itself (which, in continuous time, is zero in expectation).
    shape_loss: Literal["variance", "bound"] = "variance"
    sample_steps: int = 1000
    optim: Optim = Optim(lr=2e-4, betas=(0.9, 0.99), weight_decay=0.01)


@dataclass(frozen=True)
class AutoencoderSettings:
    """Latent diffusion's stage 1 (Rombach et al. 2022): a KL autoencoder, CompVis' loss.

    ``L = Σ|x - x̂| + w_p Σ LPIPS + kl_weight Σ KL`` per image (``udpm.objectives.autoencoder``),
    plus a patch discriminator's hinge loss from step ``disc_start`` when ``disc_weight > 0``.
    The network is ``Config.network`` (``udpm.networks.AutoencoderKL``'s arguments), the
    discriminator ``Config.discriminator`` (``PatchDiscriminator``'s). Optimiser: Adam
    (0.5, 0.9) as CompVis' ``AutoencoderKL``, lr 4.5e-6 per image of the batch (their
    ``base_learning_rate`` is scaled by the batch size; 4.5e-6 × 64 here).
    """

    kl_weight: float = 1e-6
    perceptual: Literal["lpips", "none"] = "lpips"  # lpips needs the extra and VGG weights
    perceptual_weight: float = 1.0
    disc_weight: float = 0.5  # 0: no discriminator
    disc_start: int = 50001  # CompVis' kl-f4 config
    optim: Optim = Optim(lr=2.88e-4, betas=(0.5, 0.9))


@dataclass(frozen=True)
class LDMSettings:
    """Latent diffusion's stage 2 (Rombach et al. 2022): DDPM on the frozen autoencoder's latent.

    ε-prediction with ``L_simple`` (Ho et al. 2020) on ``z' = s (z - m)``, ``s = 1/std(z)``
    measured on the first training batch (``udpm.networks.latent_diffusion``). The schedule
    is CompVis': ``√β`` linear from ``sqrt(0.0015)`` to ``sqrt(0.0195)``, T = 1000. Sampling:
    any DDPM-family sampler in latent space, then the decoder; ``x̂₀`` is not clipped (a
    latent has no [-1, 1] range). Optimiser: AdamW (torch's weight decay 0.01), as CompVis'
    ``LatentDiffusion``, lr 1e-4 (their 2e-6 per image, ×48 for LDM-4 on CelebA-HQ ≈ 1e-4).

    ``autoencoder`` is the stage-1 model file. Given it (``udpm train --autoencoder``), the
    settings record its sha256 and network arguments at once, so the model file is
    self-describing: it holds the autoencoder's weights, and sampling needs that path only.
    """

    autoencoder: str | None = None
    autoencoder_sha256: str | None = None
    autoencoder_network: dict = field(default_factory=dict)
    schedule: Literal["scaled_linear", "linear", "cosine"] = "scaled_linear"
    T: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    sampler: GaussianSampler = "ancestral"
    sample_steps: int | None = None  # None: the full chain (ancestral) or 50 (DDIM)
    eta: float | None = None
    clip_x0: bool = False
    optim: Optim = Optim(lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01)

    def __post_init__(self):
        if self.autoencoder is not None and self.autoencoder_sha256 is None:
            from udpm.config.autoencoder import describe_autoencoder

            for key, value in describe_autoencoder(self.autoencoder).items():
                object.__setattr__(self, key, value)


SETTINGS: dict[str, type] = {
    "udpm": UDPMSettings,
    "ddpm": DDPMSettings,
    "simple": SimpleSettings,
    "ddgan": DDGANSettings,
    "vdm": VDMSettings,
    "autoencoder": AutoencoderSettings,
    "ldm": LDMSettings,
}


def default_settings(method: str):
    return SETTINGS[method]()


__all__ = [
    "SETTINGS",
    "DDGANSettings",
    "DDPMSettings",
    "Optim",
    "SimpleSettings",
    "UDPMSettings",
    "VDMSettings",
    "field",
]
