"""Gaussian diffusion baselines in the shared loop: DDPM (seed 002) and simple diffusion (004).

The network is the same U-Net family as UDPM's, run at full resolution (``out_factor=1``)
with the time embedding in place of the level embedding, so comparisons change one thing.
"""

from __future__ import annotations

import dataclasses

import torch

from udpm.errors import UDPMError
from udpm.methods.base import Method

# Defaults per method; ``Config.diffusion`` overrides any of them.
DEFAULTS = {
    # DDPM (Ho et al. 2020): T = 1000, linear β 1e-4..0.02, ε-prediction, L_simple.
    "ddpm": {
        "process": {"kind": "discrete", "schedule": "linear", "T": 1000},
        "parameterization": "eps",
        "weighting": "eps",
        "multiscale_base": None,
        "sampler": "ancestral",
        "sample_steps": None,
        "eta": None,
    },
    # simple diffusion (Hoogeboom et al. 2023): shifted cosine logSNR for the training
    # resolution, v-prediction, multiscale loss.
    "simple": {
        "process": {
            "kind": "continuous",
            "schedule": "cosine",
            "base_resolution": 64,
            "shift_interpolate": False,
        },
        "parameterization": "v",
        "weighting": "v",
        "multiscale_base": 32,
        "sampler": "ancestral",
        "sample_steps": 256,
        "eta": None,
    },
}


def resolve_config(config):
    """Fill ``config.diffusion`` with the method's defaults (a no-op for UDPM)."""
    if config.method not in DEFAULTS:
        return config
    settings = {**DEFAULTS[config.method], **config.diffusion}
    process = {**DEFAULTS[config.method]["process"], **settings["process"]}
    if process["kind"] == "continuous":
        process.setdefault("resolution", config.resolution)
    settings["process"] = process
    if settings["multiscale_base"]:  # the coarsest scale cannot exceed the image
        settings["multiscale_base"] = min(settings["multiscale_base"], config.resolution)
    return dataclasses.replace(config, diffusion=settings)


def build_gaussian_process(config):
    from udpm.processes.gaussian import gaussian_process_from_config

    return gaussian_process_from_config(resolve_config(config).diffusion["process"])


class DiffusionMethod(Method):
    """One network, one denoising loss per step (Algorithm 1 of seed 002, or seed 004's)."""

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
        config = resolve_config(config)
        super().__init__(config, device, num_classes, autocast_dtype)
        from udpm.pipeline import build_network

        self.settings = config.diffusion
        self.process = build_gaussian_process(config)
        self.modules["G"] = build_network(config, num_classes).to(self.device)
        self._make_optimizers()
        # Seeded alike on every rank: each draws the global batch's t and noise, keeps its rows.
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        from udpm.objectives.gaussian import diffusion_loss, sample_times

        s, n = self.settings, x0.shape[0]
        t = self.rank_rows(lambda m: sample_times(self.process, m, generator=self.noise_gen), n)
        noise = self.rank_rows(
            lambda m: torch.randn((m, *x0.shape[1:]), generator=self.noise_gen), n
        )
        parts = self.micro_batches(x0, labels, t, noise)

        def micro_loss(i):
            x0_i, labels_i, t_i, noise_i = parts[i]
            with self.autocast():
                loss = diffusion_loss(
                    self.net("G"),
                    self.process,
                    x0_i,
                    labels_i,
                    t=t_i,
                    noise=noise_i,
                    parameterization=s["parameterization"],
                    weighting=s["weighting"],
                    multiscale_base=s["multiscale_base"],
                )
            return loss.float(), {}

        return {"loss_g": self.optimise("G", micro_loss, "the diffusion loss")["loss"]}

    def extra_state(self) -> dict:
        return {"noise_gen": self.noise_gen.get_state()}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.noise_gen.set_state(state["noise_gen"])

    def sample(self, network, seeds, labels):
        """Training-time preview grids: DDIM with 50 steps for a discrete process (cheap)."""
        shape = (self.config.channels, self.config.resolution, self.config.resolution)
        kwargs = (
            {"sampler": "ddim", "steps": 50}
            if self.settings["process"]["kind"] == "discrete"
            else {"steps": 64}
        )
        return run_sampler(
            network, self.process, self.settings, shape, seeds, None, labels, **kwargs
        )


def run_sampler(
    network, process, settings, shape, seeds, noises, labels, sampler=None, steps=None, eta=None
):
    """Dispatch to the Gaussian samplers with the method's defaults."""
    from udpm.samplers.gaussian import sample_continuous, sample_ddim, sample_ddpm

    seeds = list(seeds)
    sampler = sampler or settings["sampler"]
    steps = steps or settings["sample_steps"]
    eta = settings["eta"] if eta is None else eta
    common = dict(
        n=len(seeds),
        seed=seeds[0],
        noises=noises,
        class_labels=labels,
        steps=steps,
        parameterization=settings["parameterization"],
    )
    if settings["process"]["kind"] == "continuous":
        if sampler not in ("ancestral", "ddim"):
            raise UDPMError(f"unknown sampler {sampler!r}; use ancestral or ddim")
        if sampler == "ddim":
            eta = 0.0 if eta is None else eta
        return sample_continuous(network, process, shape, eta=eta, **common)
    if sampler == "ddim":
        return sample_ddim(network, process, shape, eta=0.0 if eta is None else eta, **common)
    if sampler == "ancestral":
        if eta is not None:
            raise UDPMError("--eta applies to the ddim sampler only")
        return sample_ddpm(network, process, shape, **common)
    raise UDPMError(f"unknown sampler {sampler!r}; use ancestral or ddim")


def sample_diffusion(pipe, seeds, noises, labels, sampler=None, steps=None, eta=None):
    """Batch sampling for :func:`udpm.samplers.dispatch.sample_batches`."""
    return run_sampler(
        pipe.network,
        pipe.process,
        pipe.config.diffusion,
        pipe.image_shape,
        seeds,
        noises,
        labels,
        sampler=sampler,
        steps=steps,
        eta=eta,
    )
