"""Parameterisations and losses of Gaussian diffusion (DDPM, simple diffusion).

With ``x_t = α x + σ ε`` and ``α² + σ² = 1`` (variance preserving), the network may predict
``ε``, ``x`` or ``v = α ε - σ x`` (Salimans and Ho 2022); any one gives the other two:

    x̂ = (x_t - σ ε̂)/α        ε̂ = (x_t - α x̂)/σ
    x̂ = α x_t - σ v̂          ε̂ = σ x_t + α v̂

The errors are proportional: ``x̂ - x = -σ (v̂ - v)`` and ``ε̂ - ε = α (v̂ - v)``, so
``L_x = σ² L_v`` and ``L_ε = α² L_v``. Which one is minimised is the weighting.

Every ``alpha``/``sigma`` argument is a float or a tensor that broadcasts against the images,
e.g. shaped (N, 1, 1, 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from udpm.errors import UDPMError
from udpm.objectives.denoiser import PARAMETERIZATIONS, Denoiser, as_denoiser, read_output

# --- parameterisations ---------------------------------------------------------------------


def x0_from_eps(x_t, eps, alpha, sigma):
    """``x = (x_t - σ ε)/α``."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    """``ε = (x_t - α x)/σ``."""
    return (x_t - alpha * x0) / sigma


def v_from_eps_x0(eps, x0, alpha, sigma):
    """``v = α ε - σ x``, the v-target (Salimans and Ho 2022)."""
    return alpha * eps - sigma * x0


def x0_from_v(x_t, v, alpha, sigma):
    """``x = α x_t - σ v``."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t, v, alpha, sigma):
    """``ε = σ x_t + α v``."""
    return sigma * x_t + alpha * v


def v_from_eps(x_t, eps, alpha, sigma):
    """``v = (ε - σ x_t)/α``, from ``ε = σ x_t + α v``."""
    return (eps - sigma * x_t) / alpha


def v_from_x0(x_t, x0, alpha, sigma):
    """``v = (α x_t - x)/σ``, from ``x = α x_t - σ v``."""
    return (alpha * x_t - x0) / sigma


def predict_x0_eps(model_output, x_t, alpha, sigma, parameterization: str = "eps"):
    """Read a network output as ``(x̂, ε̂)`` (see :func:`udpm.objectives.denoiser.read_output`)."""
    pred = read_output(model_output, x_t, alpha, sigma, parameterization)
    return pred.x0, pred.eps


# --- losses ----------------------------------------------------------------------------------


def sample_times(process, n: int, generator=None, device=None) -> torch.Tensor:
    """Training times from ``process.sample_times``: ``U{0..T-1}`` or ``U[0, 1]``, on the CPU."""
    t = process.sample_times(n, generator=generator)
    return t if device is None else t.to(device)


def diffusion_loss(
    denoiser,
    process,
    x0: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    weighting: str = "eps",
    multiscale_base: int | None = None,
) -> torch.Tensor:
    """The denoising loss ``E_t E_ε ||target - target̂||²`` with any parameterisation.

    Args:
        denoiser: a :class:`~udpm.objectives.denoiser.Denoiser` (a bare network is read as
            an ε-predictor), called at ``x_t`` and ``t``.
        process: a Gaussian process (:mod:`udpm.processes.contract`).
        x0: (N, C, H, W) data.
        class_labels: LongTensor (N,) for class-conditional networks.
        t: (N,) training times; drawn with :func:`sample_times` when omitted.
        noise: (N, C, H, W) ``ε``; drawn from ``generator`` (or the global RNG) when omitted.
            With ``t`` and ``noise`` given the loss is deterministic.
        generator: a CPU ``torch.Generator`` for ``t`` and ``noise``.
        weighting: the space the squared error is measured in: ``"eps"`` (``L_ε``, DDPM's
            ``L_simple``), ``"v"`` (``L_v``) or ``"x0"`` (``L_x``). Relative to ``L_v`` these
            weigh by ``α²``, ``1`` and ``σ²``; simple diffusion trains ``v`` with ``"eps"``.
        multiscale_base: use :func:`multiscale_loss` with this lowest resolution (e.g. 32)
            instead of the plain mean squared error.

    Returns:
        The loss, a 0-d tensor: the mean over the batch (and over pixels and channels).
    """
    n = x0.shape[0]
    if t is None:
        t = sample_times(process, n, generator)
    if noise is None:
        if generator is None:
            noise = torch.randn_like(x0)
        else:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_t = process.q_sample(x0, t, noise)
    alpha, sigma = (_like(c, x0) for c in process.alpha_sigma(t))
    pred = as_denoiser(denoiser)(process, x_t, t, class_labels)
    if weighting == "eps":
        target, estimate = noise, pred.eps
    elif weighting == "x0":
        target, estimate = x0, pred.x0
    elif weighting == "v":
        # A v-predicting network's v̂ is its output itself: exact also where α or σ is tiny.
        estimate = pred.v
        target = v_from_eps_x0(noise, x0, alpha, sigma)
    else:
        raise UDPMError(f"unknown weighting {weighting!r}; choose from {PARAMETERIZATIONS}")
    if multiscale_base is not None:
        return multiscale_loss(target, estimate, base=multiscale_base)
    return F.mse_loss(estimate, target)


def ddpm_simple_loss(
    network,
    process,
    x0: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDPM's ``L_simple = E ||ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε, t)||²`` (Algorithm 1).

    Same arguments as :func:`diffusion_loss`; the network predicts ``ε``.
    """
    return diffusion_loss(Denoiser(network, "eps"), process, x0, class_labels, t, noise, generator)


def multiscale_loss(target: torch.Tensor, estimate: torch.Tensor, base: int = 32, normalize=False):
    """Simple diffusion's multiscale loss ``Σ_{s ∈ {base, 2 base, .., d}} (1/s) L^{s×s}``.

    ``L^{s×s}`` is the mean squared error after average pooling both tensors from ``d × d``
    to ``s × s`` (Hoogeboom et al. 2023, Sec. 3.2: ``(1/s²)||D^{s×s}[ε] - D^{s×s}[ε̂]||²``,
    here also averaged over channels and the batch). With ``normalize`` the weights
    ``1/s`` are divided by their
    sum, so a single scale gives the plain mean squared error.

    Args:
        target, estimate: (N, C, d, d) with ``d = base · 2^k``.
        base: the lowest resolution.
        normalize: rescale the weights to sum to one.

    Returns:
        A 0-d tensor.
    """
    _check_same_shape(target, estimate)
    d = target.shape[-1]
    if target.shape[-2] != d:
        raise UDPMError(f"the multiscale loss needs square images, got {tuple(target.shape)}")
    scales = multiscale_resolutions(d, base)
    weights = [1.0 / s for s in scales]
    if normalize:
        weights = [w / sum(weights) for w in weights]
    loss = 0.0
    for s, w in zip(scales, weights):
        k = d // s
        loss = loss + w * F.mse_loss(F.avg_pool2d(estimate, k), F.avg_pool2d(target, k))
    return loss


def multiscale_resolutions(d: int, base: int = 32) -> list[int]:
    """``[base, 2 base, 4 base, .., d]``; raises unless ``d = base · 2^k``."""
    scales = [base]
    while scales[-1] < d:
        scales.append(scales[-1] * 2)
    if base < 1 or scales[-1] != d:
        raise UDPMError(f"resolution {d} is not base {base} times a power of 2")
    return scales


def _like(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return coef.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise UDPMError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
