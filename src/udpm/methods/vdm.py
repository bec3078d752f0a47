"""Variational Diffusion Models (Kingma et al. 2021): likelihood training with a learned γ.

The generator (:class:`udpm.networks.vdm.VDMNetwork`) owns the ε-U-Net and the schedule γ,
so the model file, the EMA and the optimiser cover both. Each step minimises the bound in
bits per dimension (:func:`udpm.objectives.vdm.vdm_bound`) at antithetic times over the
global batch; the schedule's shape follows the variance of that estimate instead (Appendix
I.2) unless ``shape_loss = "bound"``.
"""

from __future__ import annotations

import torch

from udpm.config.settings import VDMSettings
from udpm.methods.base import Method
from udpm.methods.spec import MethodSpec, SampleResult, build_unet


class VDMMethod(Method):
    """Trains ε̂ and γ on the VDM bound (continuous time, or ``T`` steps)."""

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
        super().__init__(config, device, num_classes, autocast_dtype)
        self.settings = config.settings
        self.modules["G"] = build_generator(config, num_classes).to(self.device)
        self.process = build_process(config).bind(self.modules["G"])
        self._make_optimizers()
        # Seeded alike on every rank: each draws the global batch's t and noise, keeps its rows.
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 3)

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        from udpm.objectives.vdm import ShapeVarianceGradient, vdm_bound
        from udpm.processes.vdm import antithetic_times

        s, n, shape = self.settings, x0.shape[0], x0.shape[1:]
        t = self.rank_rows(lambda m: antithetic_times(m, self.noise_gen), n)
        eps, eps_0 = (
            self.rank_rows(lambda m: torch.randn((m, *shape), generator=self.noise_gen), n)
            for _ in range(2)
        )
        parts = self.micro_batches(x0, labels, t, eps, eps_0)

        def micro_loss(i):
            x_i, labels_i, t_i, eps_i, eps0_i = parts[i]
            variance = ShapeVarianceGradient() if s.shape_loss == "variance" else None
            bound = vdm_bound(
                self.net("G"), self.process, x_i, t_i, eps_i, eps0_i, T=s.T,
                class_labels=labels_i, autocast=self.autocast(), shape_variance=variance,
            )  # fmt: skip
            bpd = bound.bpd
            if variance is not None:
                variance.set_losses(bpd)
            terms = {f"{k}_bpd": v.mean().float() for k, v in bound.term_bpd().items()}
            return bpd.mean().float(), terms

        means = self.optimise("G", micro_loss, "the VDM bound")
        gamma_0, gamma_1 = self.modules["G"].schedule.ends()
        return {
            "bpd": means.pop("loss"),
            **means,
            "gamma_0": gamma_0.item(),
            "gamma_1": gamma_1.item(),
        }


# --- the spec ----------------------------------------------------------------------------


def build_process(config):
    """An unbound :class:`VDMProcess`; ``udpm.Pipeline`` binds it to the network's γ."""
    from udpm.processes.vdm import VDMProcess

    s = config.settings
    return VDMProcess(None, s.gamma_min, s.gamma_max)


def build_generator(config, num_classes: int = 0) -> torch.nn.Module:
    from udpm.networks.schedule import NoiseSchedule
    from udpm.networks.vdm import VDMNetwork

    s = config.settings
    unet = build_unet(config.replace(network=_with_inputs(config)), num_classes, out_factor=1)
    schedule = NoiseSchedule(s.schedule, s.gamma_min, s.gamma_max, s.schedule_features)
    return VDMNetwork(unet, schedule, s.fourier)


def _with_inputs(config) -> dict:
    """The U-Net's arguments with room for ``z_t``'s Fourier features."""
    features = 1 + 2 * len(config.settings.fourier)
    return {**config.network, "in_channels": config.channels * features}


def sample(pipe, seeds, noises, labels, options, callback=None, return_levels=False):
    from udpm.errors import UDPMError
    from udpm.objectives.denoiser import Denoiser
    from udpm.samplers.vdm import sample_vdm

    if return_levels:
        raise UDPMError("vdm models have no per-level previews (UDPM has)")
    seeds = list(seeds)
    images = sample_vdm(
        Denoiser(pipe.network, "eps"),
        pipe.process,
        pipe.image_shape,
        n=len(seeds),
        seed=seeds[0],
        noises=noises,
        class_labels=labels,
        callback=callback,
        steps=options["steps"],
    )
    return SampleResult(images)


def latent_shapes(pipe, options: dict) -> list[tuple]:
    """``[z_1, ε_1, .., ε_T]``: the start and one map per ancestral step."""
    return [pipe.image_shape] * (int(options["steps"]) + 1)


def describe(config) -> str:
    s = config.settings
    bound = "continuous-time" if s.T == 0 else f"T = {s.T}"
    return (
        f"{s.schedule} γ from {s.gamma_min} to {s.gamma_max}, {bound} bound, "
        f"Fourier features 2^{list(s.fourier)}, {s.sample_steps} sampling steps"
    )


def validate(config) -> None:
    from udpm.errors import UDPMError

    s = config.settings
    if s.T < 0:
        raise UDPMError(f"settings.T must be 0 (continuous time) or positive, got {s.T}")
    if s.sample_steps < 1:
        raise UDPMError(f"settings.sample_steps must be at least 1, got {s.sample_steps}")
    if s.schedule_features < 1:
        raise UDPMError(f"settings.schedule_features must be positive, got {s.schedule_features}")


SPEC = MethodSpec(
    name="vdm",
    settings=VDMSettings,
    trainer="udpm.methods.vdm:VDMMethod",
    build_process=build_process,
    build_generator=build_generator,
    sample=sample,
    latent_shapes=latent_shapes,
    sampler_options={"steps": 1000},
    preview_options={"steps": 100},
    describe=describe,
    validate=validate,
)
