"""Samplers of Gaussian diffusion: DDPM ancestral, DDIM and continuous-time sampling.

All samplers share one signature (:mod:`udpm.samplers`)::

    sample_*(denoiser, process, image_shape, n=None, seed=0, noises=None, class_labels=None,
             callback=None, device=None, *, steps=None, eta=None, variance=None, clip_x0=False)

``denoiser`` is a :class:`~udpm.objectives.denoiser.Denoiser` (a bare network is read as an
ε-predictor). A sampler walks a descending grid of ``K`` times (``steps``); each step goes
from ``t`` to the next grid time ``s``, and the last step lands on the data (``α = 1``,
``σ = 0``); ``s`` is read off the grid (:mod:`udpm.processes.grids`).

The latent of an image is its list of noise maps ``[x_T, z_1, .., z_{K-1}]``, handed out by
:class:`udpm.noise.NoiseSource`: ``x_T ~ N(0, I)`` starts the chain and ``z_k`` is the noise of
step ``k`` (the last step adds none). Deterministic samplers (DDIM with ``η = 0``) draw only
``x_T``. Schedule coefficients are float64 Python numbers; the images are float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import torch

from udpm.errors import UDPMError
from udpm.noise import NoiseSource, seeded_noise
from udpm.objectives.denoiser import as_denoiser
from udpm.processes.grids import SPACINGS, time_grid, timestep_grid

VARIANCES = ("beta", "beta_tilde")
__all__ = [
    "SPACINGS",
    "sample_continuous",
    "sample_ddim",
    "sample_ddpm",
    "time_grid",
    "timestep_grid",
]


class _Point(NamedTuple):
    """One grid time ``t`` (the process's own index or time) and ``α``, ``σ``, ``logSNR``."""

    time: torch.Tensor | None
    alpha: float
    sigma: float
    logsnr: float


_DATA = _Point(None, 1.0, 0.0, math.inf)


def _points(process, grid) -> list[_Point]:
    """The grid's points, then the data; raises unless the grid runs from noisy to clean."""
    grid = torch.as_tensor(list(grid), dtype=process.time_dtype)
    if grid.ndim != 1 or grid.numel() < 1:
        raise UDPMError("the grid needs at least one time")
    alpha, sigma = process.alpha_sigma(grid)
    lam = process.logsnr(grid)
    if bool(torch.any(lam[1:] <= lam[:-1])):
        raise UDPMError("grid times must strictly decrease (from noisy to clean)")
    points = [
        _Point(grid[k], alpha[k].item(), sigma[k].item(), lam[k].item())
        for k in range(grid.numel())
    ]
    return points + [_DATA]


# --- one step --------------------------------------------------------------------------------


def _ancestral_update(x_t, x0_hat, eps_hat, cur: _Point, nxt: _Point, noise, variance):
    """``x_s = μ(x_t, x̂) + σ z`` with ``q(x_s | x_t, x̂)``'s mean and ``σ² = β̃`` or ``β``.

    This is Algorithm 2 of DDPM: with ``x̂ = (x_t - sqrt(1-ᾱ_t) ε̂)/sqrt(ᾱ_t)`` the posterior
    mean equals ``(x_t - β_t/sqrt(1-ᾱ_t) ε̂)/sqrt(α_t)``. Respaced, ``β = 1 - ᾱ_t/ᾱ_s``.
    """
    c = -math.expm1(cur.logsnr - nxt.logsnr)  # β/(1-ᾱ_t) = σ_{t|s}²/σ_t²; 1 at the data
    coef_xt = nxt.alpha / cur.alpha * math.exp(cur.logsnr - nxt.logsnr)
    mean = coef_xt * x_t + (nxt.alpha * c) * x0_hat
    if noise is None:
        return mean
    var = nxt.sigma**2 * c if variance == "beta_tilde" else cur.sigma**2 * c  # β̃ or β
    return mean + math.sqrt(var) * noise


def _ddim_update(x_t, x0_hat, eps_hat, cur: _Point, nxt: _Point, noise, eta):
    """DDIM (eq. 12): ``x_s = α_s x̂ + sqrt(σ_s² - ς²) ε̂ + ς z``, ``ς = η sqrt(β̃)``.

    ``β̃ = (1-ᾱ_s)/(1-ᾱ_t) (1 - ᾱ_t/ᾱ_s)``; ``η = 1`` is the ancestral chain with ``β̃``.
    """
    c = -math.expm1(cur.logsnr - nxt.logsnr)
    std = eta * math.sqrt(nxt.sigma**2 * c)
    x = nxt.alpha * x0_hat + math.sqrt(max(nxt.sigma**2 - std**2, 0.0)) * eps_hat
    return x if noise is None or std == 0 else x + std * noise


# --- noise -----------------------------------------------------------------------------------


def seeded_gaussian_noises(
    image_shape: Sequence[int], seeds: Sequence[int], count: int
) -> list[torch.Tensor]:
    """``count`` maps ``[x_T, z_1, ..]``, each (N, C, H, W): what a sampler draws for ``seeds``."""
    return seeded_noise([tuple(image_shape)] * count, seeds)


# --- the loop --------------------------------------------------------------------------------


@torch.no_grad()
def _sample(
    denoiser,
    process,
    points,
    image_shape,
    n,
    seed,
    noises,
    class_labels,
    clip_x0,
    device,
    callback,
    stochastic: bool,
    update,
):
    """Run ``update`` over consecutive grid points; see the module docstring."""
    denoiser = as_denoiser(denoiser)
    device = denoiser.device if device is None else torch.device(device)
    K = len(points) - 1
    source = NoiseSource(n, seed, noises, device)
    source.check_used(K if stochastic else 1, exact=False, what=" (x_T and one per step)")
    if class_labels is not None:
        class_labels = class_labels.to(device)
    x = source.next(image_shape)  # x_T ~ N(0, I)
    for k in range(K):
        cur, nxt = points[k], points[k + 1]
        pred = denoiser(process, x, cur.time, class_labels)
        if clip_x0:
            bound = 1.0 if clip_x0 is True else float(clip_x0)
            pred = pred.clipped(x, cur.alpha, cur.sigma, bound)
        noise = source.next(image_shape) if stochastic and k < K - 1 else None
        x = update(x, pred.x0, pred.eps, cur, nxt, noise)
        if callback is not None:
            callback(k + 1, K)
    return x


def _check_process(process, discrete: bool, sampler: str) -> None:
    if (getattr(process, "time_dtype", None) == torch.long) != discrete:
        kind = "discrete-time" if discrete else "continuous-time"
        raise UDPMError(f"{sampler} needs a {kind} Gaussian process, got {type(process).__name__}")


def _discrete_points(process, steps, default: int):
    steps = default if steps is None else steps
    if isinstance(steps, int):
        steps = timestep_grid(process.num_timesteps, steps)
    return _points(process, steps)


def _check_eta(eta) -> float:
    if not 0.0 <= eta <= 1.0:
        raise UDPMError(f"eta must lie in [0, 1], got {eta}")
    return float(eta)


def _check_variance(variance, default: str) -> str:
    variance = default if variance is None else variance
    if variance not in VARIANCES:
        raise UDPMError(f"unknown variance {variance!r}; choose from {VARIANCES}")
    return variance


# --- the samplers ----------------------------------------------------------------------------


def sample_ddpm(
    denoiser,
    process,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    *,
    steps: int | Sequence[int] | None = None,
    eta: float | None = None,
    variance: str | None = None,
    clip_x0: bool | float = False,
) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), respaced when ``steps < T``.

    Args:
        denoiser: a :class:`~udpm.objectives.denoiser.Denoiser`, or a bare ε-predicting
            ``network(x_t, time, class_labels)`` with ``time = (t + 0.5)/T`` (N,).
        process: the discrete-time Gaussian process the network was trained with.
        image_shape: ``(C, H, W)``.
        n: batch size; image ``i`` uses seed ``seed + i``. Ignored when ``noises`` is given.
        seed: first seed.
        noises: the explicit latent ``[x_T, z_1, .., z_{K-1}]``, each (N, C, H, W), or None.
        class_labels: LongTensor (N,) for class-conditional networks.
        callback: ``callback(steps_done, steps_total)`` after every network call.
        device: where to run; defaults to the network's device.
        steps: the number of steps ``K`` (default ``T``, the full chain) on the leading grid
            of :func:`timestep_grid`, or an explicit descending list of indices.
        eta: not used by DDPM; must be None (``sample_ddim`` with ``eta=1`` equals
            ``variance="beta_tilde"``).
        variance: ``σ_t²``: ``"beta"`` (``β_t``, default; Ho et al.'s CIFAR-10 setting) or
            ``"beta_tilde"`` (the posterior's ``β̃_t``).
        clip_x0: clip ``x̂_0`` to ``[-1, 1]`` (or ``[-c, c]`` for a number ``c``) at each step
            and recompute ``ε̂`` from it, as Ho et al.'s code does; ``False`` leaves it.

    Returns:
        images (N, C, H, W), float32.
    """
    _check_process(process, True, "sample_ddpm")
    if eta is not None:
        raise UDPMError("sample_ddpm has no eta; use sample_ddim for η-sampling")
    update = partial(_ancestral_update, variance=_check_variance(variance, "beta"))
    points = _discrete_points(process, steps, default=process.num_timesteps)
    return _sample(
        denoiser, process, points, image_shape, n, seed, noises, class_labels, clip_x0,
        device, callback, stochastic=True, update=update,
    )  # fmt: skip


def sample_ddim(
    denoiser,
    process,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    *,
    steps: int | Sequence[int] | None = None,
    eta: float | None = None,
    variance: str | None = None,
    clip_x0: bool | float = False,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) of a DDPM-trained network, any ``K`` and ``η``.

    Arguments as :func:`sample_ddpm`, except:

    Args:
        steps: ``K`` (default 50) on the leading grid, or an explicit descending list.
        eta: ``η ∈ [0, 1]`` (default 0, deterministic: only ``x_T`` is drawn).
        variance: not used by DDIM (``η`` sets the noise); must be None.
    """
    _check_process(process, True, "sample_ddim")
    if variance is not None:
        raise UDPMError("sample_ddim has no variance option; eta sets the noise")
    eta = _check_eta(0.0 if eta is None else eta)
    points = _discrete_points(process, steps, default=50)
    return _sample(
        denoiser, process, points, image_shape, n, seed, noises, class_labels, clip_x0,
        device, callback, stochastic=eta > 0, update=partial(_ddim_update, eta=eta),
    )  # fmt: skip


def sample_continuous(
    denoiser,
    process,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    *,
    steps: int | Sequence[float] | None = None,
    eta: float | None = None,
    variance: str | None = None,
    clip_x0: bool | float = False,
) -> torch.Tensor:
    """Sampling of a continuous-time model (simple diffusion; Hoogeboom et al. 2023).

    Ancestral by default: ``z_s ~ q(z_s | z_t, x̂)`` on the uniform grid of :func:`time_grid`.
    Arguments as :func:`sample_ddpm`, except:

    Args:
        denoiser: as :func:`sample_ddpm`; the network's time input is ``t ∈ [0, 1]`` itself.
        process: a continuous-time Gaussian process.
        steps: ``K`` (default 256) uniform steps, or an explicit descending list of times.
        eta: None for ancestral sampling, or ``η ∈ [0, 1]`` for the DDIM update on the same
            grid (0: deterministic).
        variance: for ancestral sampling, ``"beta_tilde"`` (the posterior's ``σ_{t→s}²``,
            default) or ``"beta"`` (the forward step's ``σ_{t|s}²``); None with ``eta``.
    """
    _check_process(process, False, "sample_continuous")
    steps = 256 if steps is None else steps
    points = _points(process, time_grid(steps) if isinstance(steps, int) else steps)
    if eta is None:
        update = partial(_ancestral_update, variance=_check_variance(variance, "beta_tilde"))
        stochastic = True
    else:
        if variance is not None:
            raise UDPMError("give sample_continuous either eta or variance, not both")
        eta = _check_eta(eta)
        update, stochastic = partial(_ddim_update, eta=eta), eta > 0
    return _sample(
        denoiser, process, points, image_shape, n, seed, noises, class_labels, clip_x0,
        device, callback, stochastic, update,
    )  # fmt: skip
