"""Samplers of Gaussian diffusion: DDPM ancestral, DDIM and continuous-time sampling.

All three are plain functions with one signature::

    sample_*(network, process, image_shape, n=None, seed=0, noises=None, class_labels=None,
             steps=None, eta=None, variance=None, parameterization="eps", clip_x0=None,
             device=None, progress=False)

A sampler walks a descending grid of ``K`` times (``steps``); each step goes from ``t`` to
the next grid time ``s``, and the last step lands on the data (``α = 1``, ``σ = 0``). The
step's ``s`` is always read off the actual grid, never computed as ``t - T//K``.

The latent of an image is its list of noise maps ``[x_T, z_1, .., z_{K-1}]``: ``x_T ~ N(0, I)``
starts the chain and ``z_k`` is the noise of step ``k`` (the last step adds none). Image
``i`` draws its maps, in that order, from its own generator seeded ``seed + i``, so an image
does not depend on the batch size and a seed gives the same ``x_T`` in every sampler.
Deterministic samplers (DDIM with ``η = 0``) draw only ``x_T``. Schedule coefficients are
float64 Python numbers; the images are float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from udpm.errors import UDPMError
from udpm.objectives.gaussian import PARAMETERIZATIONS, eps_from_x0, predict_x0_eps
from udpm.processes.gaussian import ContinuousGaussianProcess, DiscreteGaussianProcess

SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("beta", "beta_tilde")


# --- grids -----------------------------------------------------------------------------------


def timestep_grid(
    num_timesteps: int, steps: int, spacing: str = "leading", offset: int = 0
) -> list[int]:
    """The descending respaced indices ``t_1 > .. > t_K`` in ``0..T-1`` (diffusers' rules).

    - ``"leading"``: ``k · (T // K) + offset`` for ``k = K-1..0``; diffusers' default
      ``timestep_spacing``, with ``offset`` its ``steps_offset`` (0 by default; 1 in Stable
      Diffusion). With ``offset = 0`` it is DDIM's original ``range(0, T, T // K)``: the
      grid ends at 0 but starts at ``(K-1)·(T//K)``, not ``T - 1``.
    - ``"trailing"``: ``round(T - k T/K) - 1`` for ``k = 0..K-1``: starts at ``T - 1``
      (better for few steps; Lin et al. 2024, Table 2).
    - ``"linspace"``: ``round(linspace(0, T - 1, K))``, reversed.
    """
    T, K = int(num_timesteps), int(steps)
    if not 1 <= K <= T:
        raise UDPMError(f"steps must be in 1..{T}, got {steps}")
    if spacing not in SPACINGS:
        raise UDPMError(f"unknown timestep spacing {spacing!r}; choose from {SPACINGS}")
    if offset and spacing != "leading":
        raise UDPMError("offset applies to the leading spacing only")
    if spacing == "leading":
        grid = (np.arange(0, K) * (T // K)).round()[::-1] + offset
    elif spacing == "trailing":
        grid = np.round(T - np.arange(K) * (T / K)) - 1
    else:
        grid = np.linspace(0, T - 1, K).round()[::-1]
    grid = [int(t) for t in grid]
    if grid[0] > T - 1 or grid[-1] < 0:
        raise UDPMError(f"offset {offset} puts the grid outside 0..{T - 1}")
    return grid


def time_grid(steps: int) -> list[float]:
    """``[1, 1 - 1/K, .., 1/K]``: ``K`` uniform steps from ``t = 1`` to the data at ``t = 0``."""
    if steps < 1:
        raise UDPMError(f"steps must be at least 1, got {steps}")
    return [1 - k / steps for k in range(steps)]


class _Point(NamedTuple):
    """One grid time: the network's time input and ``α``, ``σ``, ``logSNR`` in float64."""

    time: torch.Tensor | None
    alpha: float
    sigma: float
    logsnr: float


_DATA = _Point(None, 1.0, 0.0, math.inf)


def _points(process, grid) -> list[_Point]:
    """The grid's points, then the data; raises unless the grid runs from noisy to clean."""
    dtype = torch.long if isinstance(process, DiscreteGaussianProcess) else torch.float64
    grid = torch.as_tensor(list(grid), dtype=dtype)
    if grid.ndim != 1 or grid.numel() < 1:
        raise UDPMError("the grid needs at least one time")
    alpha, sigma = process.alpha_sigma(grid)
    lam = process.logsnr(grid)
    if bool(torch.any(lam[1:] <= lam[:-1])):
        raise UDPMError("grid times must strictly decrease (from noisy to clean)")
    times = process.network_time(grid)
    points = [
        _Point(times[k], alpha[k].item(), sigma[k].item(), lam[k].item())
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
    """``count`` noise maps ``[x_T, z_1, ..]``, each (N, C, H, W), one generator per seed.

    The samplers draw the same maps lazily when given ``n`` and ``seed`` instead of ``noises``.
    """
    per_image = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        per_image.append([torch.randn(tuple(image_shape), generator=gen) for _ in range(count)])
    return [torch.stack([maps[k] for maps in per_image]) for k in range(count)]


class _NoiseSource:
    """Hands out noise maps in order: from ``noises``, or drawn from per-image generators."""

    def __init__(self, image_shape, n, seed, noises, needed: int):
        self.image_shape = tuple(image_shape)
        self.generators = None
        if noises is not None:
            if len(noises) < needed:
                raise UDPMError(
                    f"expected {needed} noise maps (x_T and one per step), got {len(noises)}"
                )
            self.n = noises[0].shape[0]
            for k in range(needed):
                if tuple(noises[k].shape) != (self.n, *self.image_shape):
                    raise UDPMError(
                        f"noise map {k} has shape {tuple(noises[k].shape)}, expected "
                        f"{(self.n, *self.image_shape)}"
                    )
            self._maps = iter(noises[:needed])
        else:
            if n is None or n < 1:
                raise UDPMError(f"give a batch size n >= 1 or explicit noise maps, got n={n}")
            self.n = n
            self.generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]

    def next(self, device) -> torch.Tensor:
        if self.generators is None:
            noise = next(self._maps)
        else:
            noise = torch.stack(
                [torch.randn(self.image_shape, generator=g) for g in self.generators]
            )
        return noise.to(device=device, dtype=torch.float32)


# --- the loop --------------------------------------------------------------------------------


@torch.no_grad()
def _sample(
    network,
    points,
    image_shape,
    n,
    seed,
    noises,
    class_labels,
    parameterization,
    clip_x0,
    device,
    progress,
    stochastic: bool,
    update,
):
    """Run ``update`` over consecutive grid points; see the module docstring."""
    if parameterization not in PARAMETERIZATIONS:
        raise UDPMError(
            f"unknown parameterization {parameterization!r}; choose from {PARAMETERIZATIONS}"
        )
    device = _default_device(network) if device is None else torch.device(device)
    K = len(points) - 1
    source = _NoiseSource(image_shape, n, seed, noises, needed=K if stochastic else 1)
    if class_labels is not None:
        class_labels = class_labels.to(device)
    x = source.next(device)  # x_T ~ N(0, I)
    for k in tqdm(range(K), disable=not progress, desc="sampling"):
        cur, nxt = points[k], points[k + 1]
        time = cur.time.to(device).expand(x.shape[0])
        output = network(x, time, class_labels).float()
        x0_hat, eps_hat = predict_x0_eps(output, x, cur.alpha, cur.sigma, parameterization)
        if clip_x0 is not None:  # keep ε̂ consistent with the clipped x̂ (improved-diffusion)
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps_hat = eps_from_x0(x, x0_hat, cur.alpha, cur.sigma)
        noise = source.next(device) if stochastic and k < K - 1 else None
        x = update(x, x0_hat, eps_hat, cur, nxt, noise)
    return x


def _default_device(network) -> torch.device:
    try:
        return next(network.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _check_process(process, kind, sampler: str) -> None:
    if not isinstance(process, kind):
        raise UDPMError(f"{sampler} needs a {kind.__name__}, got {type(process).__name__}")


def _discrete_points(process: DiscreteGaussianProcess, steps, default: int):
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
    network,
    process: DiscreteGaussianProcess,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    steps: int | Sequence[int] | None = None,
    eta: float | None = None,
    variance: str | None = None,
    parameterization: str = "eps",
    clip_x0: float | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDPM ancestral sampling (Algorithm 2 of seed 002), respaced when ``steps < T``.

    Args:
        network: ``network(x_t, time, class_labels)`` with ``time = (t + 0.5)/T`` (N,);
            output (N, C, H, W) read as ``parameterization``.
        process: the :class:`DiscreteGaussianProcess` the network was trained with.
        image_shape: ``(C, H, W)``.
        n: batch size; image ``i`` uses seed ``seed + i``. Ignored when ``noises`` is given.
        seed: first seed.
        noises: the explicit latent ``[x_T, z_1, .., z_{K-1}]``, each (N, C, H, W), or None.
        class_labels: LongTensor (N,) for class-conditional networks.
        steps: the number of steps ``K`` (default ``T``, the full chain) on the leading grid
            of :func:`timestep_grid`, or an explicit descending list of indices.
        eta: not used by DDPM; must be None (``sample_ddim`` with ``eta=1`` equals
            ``variance="beta_tilde"``).
        variance: ``σ_t²``: ``"beta"`` (``β_t``, default; Ho et al.'s CIFAR-10 setting) or
            ``"beta_tilde"`` (the posterior's ``β̃_t``).
        parameterization: what the network predicts: ``"eps"``, ``"x0"`` or ``"v"``.
        clip_x0: clip ``x̂_0`` to ``[-clip_x0, clip_x0]`` at each step (Ho et al. use 1).
        device: where to run; defaults to the network's device.
        progress: show a progress bar.

    Returns:
        images (N, C, H, W), float32.
    """
    _check_process(process, DiscreteGaussianProcess, "sample_ddpm")
    if eta is not None:
        raise UDPMError("sample_ddpm has no eta; use sample_ddim for η-sampling")
    update = partial(_ancestral_update, variance=_check_variance(variance, "beta"))
    points = _discrete_points(process, steps, default=process.num_timesteps)
    return _sample(
        network,
        points,
        image_shape,
        n,
        seed,
        noises,
        class_labels,
        parameterization,
        clip_x0,
        device,
        progress,
        stochastic=True,
        update=update,
    )


def sample_ddim(
    network,
    process: DiscreteGaussianProcess,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    steps: int | Sequence[int] | None = None,
    eta: float | None = None,
    variance: str | None = None,
    parameterization: str = "eps",
    clip_x0: float | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling (Song et al., eq. 12) of a DDPM-trained network with any ``K`` and ``η``.

    Arguments as :func:`sample_ddpm`, except:

    Args:
        steps: ``K`` (default 50) on the leading grid, or an explicit descending list.
        eta: ``η ∈ [0, 1]`` (default 0, deterministic: only ``x_T`` is drawn).
        variance: not used by DDIM (``η`` sets the noise); must be None.
        clip_x0: clip ``x̂_0`` and recompute ``ε̂`` from it (diffusers'
            ``use_clipped_model_output=True``).
    """
    _check_process(process, DiscreteGaussianProcess, "sample_ddim")
    if variance is not None:
        raise UDPMError("sample_ddim has no variance option; eta sets the noise")
    eta = _check_eta(0.0 if eta is None else eta)
    points = _discrete_points(process, steps, default=50)
    return _sample(
        network,
        points,
        image_shape,
        n,
        seed,
        noises,
        class_labels,
        parameterization,
        clip_x0,
        device,
        progress,
        stochastic=eta > 0,
        update=partial(_ddim_update, eta=eta),
    )


def sample_continuous(
    network,
    process: ContinuousGaussianProcess,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    steps: int | Sequence[float] | None = None,
    eta: float | None = None,
    variance: str | None = None,
    parameterization: str = "eps",
    clip_x0: float | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sampling of a continuous-time model (simple diffusion, seed 004).

    Ancestral by default: ``z_s ~ q(z_s | z_t, x̂)`` on the uniform grid of :func:`time_grid`.
    Arguments as :func:`sample_ddpm`, except:

    Args:
        network: ``network(z_t, t, class_labels)`` with ``t ∈ [0, 1]`` itself.
        process: a :class:`ContinuousGaussianProcess`.
        steps: ``K`` (default 256) uniform steps, or an explicit descending list of times.
        eta: None for ancestral sampling, or ``η ∈ [0, 1]`` for the DDIM update on the same
            grid (0: deterministic).
        variance: for ancestral sampling, ``"beta_tilde"`` (the posterior's ``σ_{t→s}²``,
            default) or ``"beta"`` (the forward step's ``σ_{t|s}²``); None with ``eta``.
    """
    _check_process(process, ContinuousGaussianProcess, "sample_continuous")
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
        network,
        points,
        image_shape,
        n,
        seed,
        noises,
        class_labels,
        parameterization,
        clip_x0,
        device,
        progress,
        stochastic,
        update,
    )
