"""Discrete noise schedules defined by a formula: pure functions returning float64 ``β``.

DDGAN (Xiao et al. 2022, "Tackling the generative learning trilemma with denoising
diffusion GANs", Appendix B; NVlabs/denoising-diffusion-gan ``get_sigma_schedule``) takes
its few steps off the VP SDE of Song et al. (2021): for ``T`` steps, at the times

    t_k = (k/T)(1 - ε) + ε,    k = 0..T,   ε = 1e-3,

with ``ᾱ_VP(t) = exp(-½ t² (β_max - β_min) - t β_min)``, step ``k`` has

    β_k = 1 - ᾱ_VP(t_k)/ᾱ_VP(t_{k-1}),    k = 1..T.

So the chain's ``ᾱ_T = ᾱ_VP(1)/ᾱ_VP(ε) ≈ 4.3e-5`` for ``β_min = 0.1``, ``β_max = 20``: the
prior ``N(0, I)`` is not quite ``q(x_T)``, as in DDPM.
"""

from __future__ import annotations

import torch

from udpm.errors import UDPMError

DDGAN_EPS = 1e-3  # ε: the earliest VP time, so that β_1 > 0


def vp_alpha_bar(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """``ᾱ_VP(t) = exp(-½ t² (β_max - β_min) - t β_min)``, the VP SDE's signal power."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.exp(-0.5 * t**2 * (beta_max - beta_min) - t * beta_min)


def ddgan_betas(T: int = 4, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """DDGAN's ``β_1..β_T`` (float64, length ``T``); see the module docstring."""
    if int(T) != T or T < 1:
        raise UDPMError(f"the DDGAN schedule needs T >= 1 steps, got {T}")
    if not 0 < beta_min < beta_max:
        raise UDPMError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
    k = torch.arange(int(T) + 1, dtype=torch.float64)
    t = k / T * (1 - DDGAN_EPS) + DDGAN_EPS
    alpha_bar = vp_alpha_bar(t, beta_min, beta_max)
    # 1 - ᾱ_k/ᾱ_{k-1} = -expm1(log ᾱ_k - log ᾱ_{k-1}): exact for tiny steps too.
    return -torch.expm1(alpha_bar[1:].log() - alpha_bar[:-1].log())


def ddgan_process(T: int = 4, beta_min: float = 0.1, beta_max: float = 20.0):
    """The :class:`DiscreteGaussianProcess` of DDGAN's schedule with ``T`` steps.

    It stores its ``T`` betas in ``to_config`` (a handful of numbers), so it rebuilds with
    ``gaussian_process_from_config`` like any other discrete process.
    """
    from udpm.processes.gaussian import DiscreteGaussianProcess

    return DiscreteGaussianProcess(ddgan_betas(T, beta_min, beta_max))
