"""The denoiser contract: a network plus its parameterisation gives ``x̂₀``, ``ε̂`` and ``v̂``.

With ``x_t = α x_0 + σ ε`` and ``α² + σ² = 1`` a network may predict ``ε`` (Ho et al. 2020),
``x_0``, or ``v = α ε - σ x_0`` (Salimans and Ho 2022, Sec. 4); any one gives the others:

    x̂ = (x_t - σ ε̂)/α        ε̂ = (x_t - α x̂)/σ
    x̂ = α x_t - σ v̂          ε̂ = σ x_t + α v̂

Losses and samplers ask a :class:`Denoiser` for a :class:`Prediction` and never see the
parameterisation string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch

from udpm.config.settings import Parameterization
from udpm.errors import UDPMError

PARAMETERIZATIONS = get_args(Parameterization)


@dataclass(frozen=True)
class Prediction:
    """One network call read three ways; every field (N, C, H, W)."""

    x0: torch.Tensor
    eps: torch.Tensor
    v: torch.Tensor

    def clipped(self, x_t, alpha, sigma, bound: float = 1.0) -> Prediction:
        """``x̂₀`` clipped to ``[-bound, bound]``, ``ε̂`` and ``v̂`` made consistent with it.

        Ho et al.'s sampler and diffusers' schedulers clip ``x̂₀`` for data in [-1, 1];
        recomputing ``ε̂`` from the clipped ``x̂₀`` is improved-diffusion's (and diffusers'
        ``use_clipped_model_output``) choice.
        """
        x0 = self.x0.clamp(-bound, bound)
        eps = (x_t - alpha * x0) / sigma
        return Prediction(x0, eps, alpha * eps - sigma * x0)


def read_output(output, x_t, alpha, sigma, parameterization: str) -> Prediction:
    """A network output read as ``parameterization``; ``alpha``, ``sigma`` broadcast on it."""
    if parameterization == "eps":
        x0 = (x_t - sigma * output) / alpha
        return Prediction(x0, output, alpha * output - sigma * x0)
    if parameterization == "x0":
        eps = (x_t - alpha * output) / sigma
        return Prediction(output, eps, alpha * eps - sigma * output)
    if parameterization == "v":
        return Prediction(alpha * x_t - sigma * output, sigma * x_t + alpha * output, output)
    raise UDPMError(
        f"unknown parameterization {parameterization!r}; choose from {PARAMETERIZATIONS}"
    )


class Denoiser:
    """``D(x_t, t) -> Prediction`` for a Gaussian process.

    Args:
        network: ``network(x_t, time, class_labels)`` with ``time = process.network_time(t)``
            of shape (N,); its output (N, C, H, W) is read as ``parameterization``.
        parameterization: ``"eps"``, ``"x0"`` or ``"v"``.
    """

    def __init__(self, network: torch.nn.Module, parameterization: str = "eps"):
        if parameterization not in PARAMETERIZATIONS:
            raise UDPMError(
                f"unknown parameterization {parameterization!r}; choose from {PARAMETERIZATIONS}"
            )
        self.network, self.parameterization = network, parameterization

    def __call__(self, process, x_t, t, class_labels=None) -> Prediction:
        """The prediction at ``x_t`` (N, C, H, W) and time(s) ``t`` (one, or (N,))."""
        alpha, sigma = (_like(c, x_t) for c in process.alpha_sigma(t))
        time = process.network_time(t).to(x_t.device).expand(x_t.shape[0])
        output = self.network(x_t, time, class_labels).float()
        return read_output(output, x_t, alpha, sigma, self.parameterization)

    @property
    def device(self) -> torch.device:
        try:
            return next(self.network.parameters()).device
        except (AttributeError, StopIteration):
            return torch.device("cpu")


def as_denoiser(denoiser_or_network) -> Denoiser:
    """A :class:`Denoiser`; a bare network is read as an ε-predictor (DDPM's)."""
    if isinstance(denoiser_or_network, Denoiser):
        return denoiser_or_network
    return Denoiser(denoiser_or_network, "eps")


def _like(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    coef = coef.to(device=x.device, dtype=x.dtype)
    return coef if coef.ndim == 0 else coef.reshape(-1, *([1] * (x.ndim - 1)))
