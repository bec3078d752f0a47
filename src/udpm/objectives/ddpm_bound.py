"""DDPM's discrete variational bound (Ho et al. 2020, eq. 5 and Sec. 3.3), per image in nats.

    L = L_T + Σ_{t=2}^{T} L_{t-1} + L_0,
    L_T     = KL(q(x_T | x_0) ‖ N(0, I)),
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t)),   p = N(μ_θ(x_t, t), σ_t² I),
    L_0     = -log p(x_0 | x_1), the discretised Gaussian decoder of eq. 13.

``μ_θ`` is the posterior mean with the network's (unclipped) ``x̂_0``; ``σ_t² = β_t`` (the
"fixed isotropic" variance Ho et al. train ``L_simple`` with and report 3.70-3.75 bpd for).
The sum over ``t`` is estimated without bias by one uniform ``t ∈ {1..T}`` per image:
``T · L_{t-1}`` (with ``L_0`` at ``t = 1``). Data are ``x = k/127.5 - 1``, the bins
``[x - 1/255, x + 1/255]``, the outer ones open to ±∞. Indices follow
:class:`udpm.processes.gaussian.DiscreteGaussianProcess` (paper step ``t`` = index ``t - 1``).
"""

from __future__ import annotations

import math

import torch

from udpm.objectives.vdm import Bound


def _normal_kl(mean_1, var_1, mean_2, var_2) -> torch.Tensor:
    """``KL(N(μ1, v1) ‖ N(μ2, v2))`` per element (float64)."""
    return 0.5 * (torch.log(var_2 / var_1) + (var_1 + (mean_1 - mean_2) ** 2) / var_2 - 1)


def _log_ndtr_diff(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """``log(Φ(upper) - Φ(lower))``, stable in both tails (float64)."""
    upper_tail = lower > 0  # use the mirrored difference Φ(-lower) - Φ(-upper) there
    a = torch.where(upper_tail, -lower, upper)
    b = torch.where(upper_tail, -upper, lower)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return log_a + torch.log1p(-torch.exp(log_b - log_a).clamp(max=1.0))


def discretised_gaussian_nll(x0, mean, var) -> torch.Tensor:
    """``-log ∫_bin N(y; mean, var) dy`` per element for 8-bit ``x0`` (Ho et al. eq. 13)."""
    std = var.sqrt()
    upper = torch.where(x0 > 1 - 1e-3, math.inf, (x0 + 1 / 255 - mean) / std)
    lower = torch.where(x0 < -1 + 1e-3, -math.inf, (x0 - 1 / 255 - mean) / std)
    return -_log_ndtr_diff(upper, lower)


def ddpm_bound(denoiser, process, x0, t, noise, class_labels=None) -> Bound:
    """The bound's terms for ``x0`` (N, C, H, W) at indices ``t`` (N,) in ``0..T-1``.

    Returns a :class:`udpm.objectives.vdm.Bound` whose ``reconstruction`` is ``T · L_0`` where
    ``t = 0`` (else 0) and ``diffusion`` is ``T · L_{t}`` elsewhere, so that their sum is
    the unbiased one-sample estimate of ``Σ_t L_t``.
    """
    x0 = torch.round((x0.double() + 1) * 127.5).clamp(0, 255) / 127.5 - 1  # exact 8-bit
    T, t = process.num_timesteps, t.to(x0.device)
    alpha_T, sigma_T = (c.item() for c in process.alpha_sigma(torch.tensor([T - 1])))
    prior = _normal_kl(alpha_T * x0, torch.tensor(sigma_T**2), 0.0, torch.tensor(1.0))
    x_t = process.q_sample(x0.float(), t, noise).double()
    pred = denoiser(process, x_t.float(), t, class_labels)
    mean_hat, _ = process.posterior_mean_var(x_t, pred.x0.double(), t)
    var_p = process.betas.to(x0.device)[t].view(-1, 1, 1, 1)  # σ_t² = β_t
    first = t == 0
    decoder = discretised_gaussian_nll(x0, mean_hat, var_p).flatten(1).sum(1)
    safe_t = torch.where(first, torch.ones_like(t), t)  # q's posterior at t = 0 is a point mass
    mean_q, var_q = process.posterior_mean_var(x_t, x0, safe_t)
    kl = _normal_kl(mean_q, var_q, mean_hat, var_p).flatten(1).sum(1)
    zero = torch.zeros_like(kl)
    return Bound(
        prior.flatten(1).sum(1),
        T * torch.where(first, decoder, zero),
        T * torch.where(first, zero, kl),
        x0[0].numel(),
    )
