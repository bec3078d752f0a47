"""Parameterisations and losses of Gaussian diffusion (DDPM, simple diffusion).

With ``x_t = α x + σ ε`` and ``α² + σ² = 1`` (variance preserving), the network may predict
``ε``, ``x`` or ``v = α ε - σ x`` (seed 004); any one gives the other two:

    x̂ = (x_t - σ ε̂)/α        ε̂ = (x_t - α x̂)/σ
    x̂ = α x_t - σ v̂          ε̂ = σ x_t + α v̂

The errors are proportional: ``x̂ - x = -σ (v̂ - v)`` and ``ε̂ - ε = α (v̂ - v)``, so
``L_x = σ² L_v`` and ``L_ε = α² L_v`` (seed 004). Which one is minimised is the weighting.

Every ``alpha``/``sigma`` argument is a float or a tensor that broadcasts against the images,
e.g. shaped (N, 1, 1, 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from udpm.errors import UDPMError
from udpm.processes.gaussian import (
    ContinuousGaussianProcess,
    DiscreteGaussianProcess,
    GaussianProcess,
)

PARAMETERIZATIONS = ("eps", "x0", "v")


# --- parameterisations ---------------------------------------------------------------------


def x0_from_eps(x_t, eps, alpha, sigma):
    """``x = (x_t - σ ε)/α``."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    """``ε = (x_t - α x)/σ``."""
    return (x_t - alpha * x0) / sigma


def v_from_eps_x0(eps, x0, alpha, sigma):
    """``v = α ε - σ x``, the v-target (seed 004)."""
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
    """Read a network output as ``(x̂, ε̂)``.

    Args:
        model_output: (N, C, H, W), the network's ``ε̂``, ``x̂`` or ``v̂``.
        x_t: (N, C, H, W), the network's input.
        alpha, sigma: ``α_t``, ``σ_t`` of ``x_t``.
        parameterization: ``"eps"``, ``"x0"`` or ``"v"``.

    Returns:
        ``(x0_hat, eps_hat)``, both (N, C, H, W).
    """
    if parameterization == "eps":
        return x0_from_eps(x_t, model_output, alpha, sigma), model_output
    if parameterization == "x0":
        return model_output, eps_from_x0(x_t, model_output, alpha, sigma)
    if parameterization == "v":
        return x0_from_v(x_t, model_output, alpha, sigma), eps_from_v(
            x_t, model_output, alpha, sigma
        )
    raise UDPMError(
        f"unknown parameterization {parameterization!r}; choose from {PARAMETERIZATIONS}"
    )


# --- losses ----------------------------------------------------------------------------------


def sample_times(process: GaussianProcess, n: int, generator=None, device=None) -> torch.Tensor:
    """Training times: ``t ~ U{0..T-1}`` (Algorithm 1) or ``t ~ U[0, 1]``; drawn on the CPU.

    Returns a LongTensor (N,) for a discrete process, a float64 tensor (N,) otherwise.
    """
    if isinstance(process, DiscreteGaussianProcess):
        t = torch.randint(0, process.num_timesteps, (n,), generator=generator)
    elif isinstance(process, ContinuousGaussianProcess):
        t = torch.rand(n, generator=generator, dtype=torch.float64)
    else:
        raise UDPMError(f"expected a Gaussian process, got {type(process).__name__}")
    return t if device is None else t.to(device)


def diffusion_loss(
    network,
    process: GaussianProcess,
    x0: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    parameterization: str = "eps",
    weighting: str = "eps",
    multiscale_base: int | None = None,
) -> torch.Tensor:
    """The denoising loss ``E_t E_ε ||target - target̂||²`` with any parameterisation.

    Args:
        network: ``network(x_t, time, class_labels)``, ``time = process.network_time(t)``;
            output (N, C, H, W) read as ``parameterization``.
        process: a :class:`DiscreteGaussianProcess` or :class:`ContinuousGaussianProcess`.
        x0: (N, C, H, W) data.
        class_labels: LongTensor (N,) for class-conditional networks.
        t: (N,) training times; drawn with :func:`sample_times` when omitted.
        noise: (N, C, H, W) ``ε``; drawn from ``generator`` (or the global RNG) when omitted.
            With ``t`` and ``noise`` given the loss is deterministic.
        generator: a CPU ``torch.Generator`` for ``t`` and ``noise``.
        parameterization: what the network predicts: ``"eps"``, ``"x0"`` or ``"v"``.
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
    time = process.network_time(t).to(x0.device)
    output = network(x_t, time, class_labels)
    x0_hat, eps_hat = predict_x0_eps(output, x_t, alpha, sigma, parameterization)
    if weighting == "eps":
        target, estimate = noise, eps_hat
    elif weighting == "x0":
        target, estimate = x0, x0_hat
    elif weighting == "v":
        if parameterization == "v":  # exact, also where α or σ is tiny
            estimate = output
        else:
            estimate = v_from_eps_x0(eps_hat, x0_hat, alpha, sigma)
        target = v_from_eps_x0(noise, x0, alpha, sigma)
    else:
        raise UDPMError(f"unknown weighting {weighting!r}; choose from {PARAMETERIZATIONS}")
    if multiscale_base is not None:
        return multiscale_loss(target, estimate, base=multiscale_base)
    return F.mse_loss(estimate, target)


def ddpm_simple_loss(
    network,
    process: DiscreteGaussianProcess,
    x0: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDPM's ``L_simple = E ||ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε, t)||²`` (Algorithm 1).

    Same arguments as :func:`diffusion_loss`; the network predicts ``ε``.
    """
    return diffusion_loss(
        network, process, x0, class_labels, t, noise, generator, parameterization="eps"
    )


def multiscale_loss(target: torch.Tensor, estimate: torch.Tensor, base: int = 32, normalize=False):
    """Simple diffusion's multiscale loss ``Σ_{s ∈ {base, 2 base, .., d}} (1/s) L^{s×s}``.

    ``L^{s×s}`` is the mean squared error after average pooling both tensors from ``d × d``
    to ``s × s`` (seed 004's ``(1/s²)||D^{s×s}[ε] - D^{s×s}[ε̂]||²``, here also averaged over
    channels and the batch). With ``normalize`` the weights ``1/s`` are divided by their
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
