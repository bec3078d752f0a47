"""Likelihood evaluation: VDM's variational bound on a SOURCE's images, in bits per dimension.

``bpd = E[-log p(x)] bound / (D ln 2)`` with ``D = C·H·W``, the bound of
:func:`udpm.objectives.vdm.vdm_bound` (prior + reconstruction + diffusion) in continuous
time (or with the model's ``T`` steps), using the model's own (EMA) weights and schedule.
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
    """Raise a one-line error unless ``pipe`` has a likelihood bound here (VDM)."""
    from udpm.processes.vdm import VDMProcess

    if not isinstance(pipe.process, VDMProcess):
        raise UDPMError(
            f"bpd needs a likelihood model with a bound here (vdm); {pipe.config.method} "
            "models have none"
        )


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
    from udpm.objectives.vdm import vdm_bound
    from udpm.processes.vdm import antithetic_times

    likelihood_model(pipe)
    if time_samples < 1:
        raise UDPMError(f"time_samples must be at least 1, got {time_samples}")
    if tuple(images.shape[1:]) != tuple(pipe.image_shape):
        raise UDPMError(
            f"images have shape {tuple(images.shape[1:])}, the model {tuple(pipe.image_shape)}"
        )
    x_all = from_uint8(images) if images.dtype == torch.uint8 else images.float()
    gen, T, t0 = torch.Generator().manual_seed(seed), pipe.config.settings.T, time.perf_counter()
    sums = {k: torch.zeros(len(x_all), dtype=torch.float64) for k in _TERMS}
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size].to(pipe.device)
        for _ in range(time_samples):
            t = antithetic_times(len(x), gen)
            eps, eps_0 = (torch.randn(x.shape, generator=gen).to(x.device) for _ in range(2))
            terms = vdm_bound(pipe.network, pipe.process, x, t, eps, eps_0, T=T).term_bpd()
            for k in _TERMS:
                sums[k][start : start + len(x)] += terms[k].cpu()
    per_image = {k: v / time_samples for k, v in sums.items()}
    bpd = sum(per_image.values())
    result = {"bpd": bpd.mean().item(), "bpd_stderr": _stderr(bpd)}
    result.update({f"{k}_bpd": v.mean().item() for k, v in per_image.items()})
    result.update(
        n_images=len(x_all),
        time_samples=time_samples,
        bound="continuous time" if T == 0 else f"T = {T}",
        bpd_seconds=round(time.perf_counter() - t0, 2),
    )
    return result


_TERMS = ("prior", "reconstruction", "diffusion")


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
