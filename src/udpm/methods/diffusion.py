"""Gaussian diffusion baselines: DDPM (Ho et al. 2020) and simple diffusion (Hoogeboom et al. 2023).

The network is the same U-Net family as UDPM's, run at full resolution (``out_factor=1``)
with the time embedding in place of the level embedding, so comparisons change one thing.
"""

from __future__ import annotations

import torch

from udpm.config.settings import DDPMSettings, SimpleSettings
from udpm.methods.base import Method
from udpm.methods.spec import MethodSpec, SampleResult, build_unet
from udpm.objectives.denoiser import Denoiser


class DiffusionMethod(Method):
    """One network, one denoising loss per step (Ho et al.'s Algorithm 1, or Hoogeboom et al.'s)."""

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
        super().__init__(config, device, num_classes, autocast_dtype)
        self.settings = config.settings
        self.process = build_process(config)
        self.modules["G"] = build_generator(config, num_classes).to(self.device)
        self._make_optimizers()
        # Seeded alike on every rank: each draws the global batch's t and noise, keeps its rows.
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        from udpm.objectives.gaussian import diffusion_loss

        s, n = self.settings, x0.shape[0]
        t = self.rank_rows(lambda m: self.process.sample_times(m, generator=self.noise_gen), n)
        noise = self.rank_rows(
            lambda m: torch.randn((m, *x0.shape[1:]), generator=self.noise_gen), n
        )
        parts = self.micro_batches(x0, labels, t, noise)
        multiscale = getattr(s, "multiscale_base", None)
        if multiscale:  # the coarsest scale cannot exceed the image
            multiscale = min(multiscale, x0.shape[-1])

        def micro_loss(i):
            x0_i, labels_i, t_i, noise_i = parts[i]
            with self.autocast():
                loss = diffusion_loss(
                    Denoiser(self.net("G"), s.parameterization),
                    self.process,
                    x0_i,
                    labels_i,
                    t=t_i,
                    noise=noise_i,
                    weighting=s.weighting,
                    multiscale_base=multiscale,
                )
            return loss.float(), {}

        return {"loss_g": self.optimise("G", micro_loss, "the diffusion loss")["loss"]}


# --- the specs ---------------------------------------------------------------------------


def build_process(config):
    from udpm.processes.gaussian import ContinuousGaussianProcess, DiscreteGaussianProcess

    s = config.settings
    if config.method == "ddpm":
        if s.schedule == "linear":
            return DiscreteGaussianProcess.linear(s.T, s.beta_start, s.beta_end)
        return DiscreteGaussianProcess.cosine(s.T)
    return ContinuousGaussianProcess(
        s.schedule,
        resolution=config.resolution,
        base_resolution=s.base_resolution,
        shift_interpolate=s.shift_interpolate,
        logsnr_min=s.logsnr_min,
        logsnr_max=s.logsnr_max,
    )


def build_generator(config, num_classes: int = 0) -> torch.nn.Module:
    return build_unet(config, num_classes, out_factor=1)


def _sampler(config, options):
    """The sampling function and its keyword options for ``options``."""
    from udpm.errors import UDPMError
    from udpm.samplers.gaussian import sample_continuous, sample_ddim, sample_ddpm

    sampler, eta = options["sampler"], options["eta"]
    kwargs = {"steps": options["steps"], "clip_x0": options["clip_x0"]}
    if sampler not in ("ancestral", "ddim"):
        raise UDPMError(f"unknown sampler {sampler!r}; use ancestral or ddim")
    if config.method == "simple":
        eta = 0.0 if sampler == "ddim" and eta is None else eta
        return sample_continuous, {**kwargs, "eta": eta}
    if sampler == "ddim":
        return sample_ddim, {**kwargs, "eta": 0.0 if eta is None else eta}
    if eta is not None:
        raise UDPMError("--eta applies to the ddim sampler only")
    return sample_ddpm, kwargs


def sample(pipe, seeds, noises, labels, options, callback=None, return_levels=False):
    from udpm.errors import UDPMError

    if return_levels:
        raise UDPMError(f"{pipe.config.method} models have no per-level previews (UDPM has)")
    fn, kwargs = _sampler(pipe.config, options)
    seeds = list(seeds)
    denoiser = Denoiser(pipe.network, pipe.config.settings.parameterization)
    images = fn(
        denoiser,
        pipe.process,
        pipe.image_shape,
        n=len(seeds),
        seed=seeds[0],
        noises=noises,
        class_labels=labels,
        callback=callback,
        **kwargs,
    )
    return SampleResult(images)


def num_steps(config, process, options) -> int:
    """``K``, the number of network calls of the chosen sampler."""
    steps = options["steps"]
    if steps is None:
        if config.method == "simple":
            return 256
        return process.num_timesteps if options["sampler"] == "ancestral" else 50
    return steps if isinstance(steps, int) else len(steps)


def latent_shapes(pipe, options: dict) -> list[tuple]:
    """``[x_T, z_1, .., z_{K-1}]``; a deterministic sampler (η = 0) consumes ``x_T`` only."""
    K = num_steps(pipe.config, pipe.process, options)
    deterministic = options["sampler"] == "ddim" and not options["eta"]
    return [pipe.image_shape] * (1 if deterministic else K)


def describe(config) -> str:
    s = config.settings
    if config.method == "ddpm":
        schedule = f"{s.schedule} β {s.beta_start}..{s.beta_end}, T = {s.T}"
    else:
        schedule = (
            f"{s.schedule} logSNR shifted for {config.resolution} px (base {s.base_resolution})"
        )
    return f"{schedule}, {s.parameterization}-prediction, {s.weighting} loss"


_OPTIONS = {"sampler": "ancestral", "steps": None, "eta": None, "clip_x0": True}
_COMMON = dict(
    trainer="udpm.methods.diffusion:DiffusionMethod",
    build_process=build_process,
    build_generator=build_generator,
    sample=sample,
    latent_shapes=latent_shapes,
    sampler_options=_OPTIONS,
    describe=describe,
)
SPECS = {
    # Training-time grids with DDIM-50: cheap, and deterministic given x_T.
    "ddpm": MethodSpec(
        name="ddpm",
        settings=DDPMSettings,
        preview_options={"sampler": "ddim", "steps": 50},
        **_COMMON,
    ),
    "simple": MethodSpec(
        name="simple", settings=SimpleSettings, preview_options={"steps": 64}, **_COMMON
    ),
}
