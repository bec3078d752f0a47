"""Likelihood evaluation: a model's variational bound on a SOURCE's images, in bits per dimension.

``bpd = E[-log p(x)] bound / (D ln 2)`` with ``D = C·H·W``, the bound (prior +
reconstruction + diffusion) of :func:`udpm.objectives.vdm.vdm_bound` for VDM (continuous
time, or the model's ``T`` steps) and of :func:`udpm.objectives.ddpm_bound.ddpm_bound` for
DDPM (Ho et al.'s discrete bound), using the model's own (EMA) weights.
Each image's bound is averaged over ``time_samples`` independent draws of ``(t, ε, ε_0)``
(antithetic times within a batch); the standard error is that of the mean over images of
those averages, so it includes both the Monte Carlo and the image-to-image spread. The
draws come from one CPU generator seeded ``seed``: the result is reproducible.
"""

from __future__ import annotations

import math
import time

import torch

from udpm.errors import UDPMError
from udpm.images import from_uint8


def likelihood_model(pipe) -> None:
    """Raise a one-line error unless ``pipe`` has a likelihood bound here (VDM, DDPM)."""
    from udpm.processes.gaussian import DiscreteGaussianProcess
    from udpm.processes.vdm import VDMProcess

    if not isinstance(pipe.process, VDMProcess | DiscreteGaussianProcess):
        raise UDPMError(
            f"bpd needs a likelihood model with a bound here (vdm, ddpm); {pipe.config.method} "
            "models have none"
        )


def _bound_fn(pipe):
    """``(x, generator) -> Bound``: one draw of the model's bound for a batch."""
    from udpm.objectives.denoiser import Denoiser
    from udpm.processes.vdm import VDMProcess, antithetic_times

    if isinstance(pipe.process, VDMProcess):
        from udpm.objectives.vdm import vdm_bound

        def vdm(x, gen):
            t = antithetic_times(len(x), gen)
            eps, eps_0 = (torch.randn(x.shape, generator=gen).to(x.device) for _ in range(2))
            return vdm_bound(pipe.network, pipe.process, x, t, eps, eps_0, T=pipe.config.settings.T)

        return vdm
    from udpm.objectives.ddpm_bound import ddpm_bound

    denoiser = Denoiser(pipe.network, pipe.config.settings.parameterization)

    def ddpm(x, gen):
        t = pipe.process.sample_times(len(x), generator=gen)
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        return ddpm_bound(denoiser, pipe.process, x, t, noise)

    return ddpm


@torch.no_grad()
def evaluate_bpd(
    pipe,
    images: torch.Tensor,
    time_samples: int = 8,
    batch_size: int = 128,
    seed: int = 0,
) -> dict:
    """The bound on ``images`` (uint8 (N, C, H, W), or floats in [-1, 1]).

    Returns ``bpd``, ``bpd_stderr``, ``prior_bpd``, ``reconstruction_bpd``,
    ``diffusion_bpd``, ``n_images``, ``time_samples``, ``bound`` and ``bpd_seconds``.
    """
    likelihood_model(pipe)
    if time_samples < 1:
        raise UDPMError(f"time_samples must be at least 1, got {time_samples}")
    if tuple(images.shape[1:]) != tuple(pipe.image_shape):
        raise UDPMError(
            f"images have shape {tuple(images.shape[1:])}, the model {tuple(pipe.image_shape)}"
        )
    x_all = from_uint8(images) if images.dtype == torch.uint8 else images.float()
    gen, t0, bound_fn = torch.Generator().manual_seed(seed), time.perf_counter(), _bound_fn(pipe)
    sums = {k: torch.zeros(len(x_all), dtype=torch.float64) for k in _TERMS}
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size].to(pipe.device)
        for _ in range(time_samples):
            terms = bound_fn(x, gen).term_bpd()
            for k in _TERMS:
                sums[k][start : start + len(x)] += terms[k].cpu()
    per_image = {k: v / time_samples for k, v in sums.items()}
    bpd = sum(per_image.values())
    result = {"bpd": bpd.mean().item(), "bpd_stderr": _stderr(bpd)}
    result.update({f"{k}_bpd": v.mean().item() for k, v in per_image.items()})
    result.update(
        n_images=len(x_all),
        time_samples=time_samples,
        bound=_describe(pipe),
        bpd_seconds=round(time.perf_counter() - t0, 2),
    )
    return result


_TERMS = ("prior", "reconstruction", "diffusion")


def _describe(pipe) -> str:
    """``"vdm, continuous time"`` or ``"ddpm, T = 1000"``."""
    T = getattr(pipe.process, "num_timesteps", None) or pipe.config.settings.T
    return f"{pipe.config.method}, " + (f"T = {T}" if T else "continuous time")


def _stderr(values: torch.Tensor) -> float:
    if len(values) < 2:
        return math.nan
    return (values.std() / math.sqrt(len(values))).item()


def evaluate_bpd_source(pipe, source: str, **kwargs) -> dict:
    """:func:`evaluate_bpd` on every image of SOURCE, resized to the model's resolution."""
    from udpm.data import load_source

    likelihood_model(pipe)
    data = load_source(source, resolution=pipe.config.resolution, channels=pipe.config.channels)
    return {**evaluate_bpd(pipe, data.images, **kwargs), "bpd_data": str(source)}
