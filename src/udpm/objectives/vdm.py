"""VDM's variational bound on the likelihood of 8-bit images (Kingma et al. 2021, Sec. 3-4).

Per image, in nats (``google-research/vdm``, ``vdm.py``), with ``γ`` the noise schedule:

- prior ``KL(q(z_1 | x) ‖ N(0, I)) = ½ Σ (α_1² x² + σ_1² - log σ_1² - 1)``;
- reconstruction ``-log p(x | z_0)``: per sub-pixel a 256-way softmax over the bin centres
  ``x_k = (2k + 1)/256 - 1`` of the logits ``-½ e^{-γ_0} (z_0/α_0 - x_k)²`` (eq. 23-24);
- diffusion, continuous time (eq. 17): ``½ γ'(t) ‖ε - ε̂(z_t, t)‖²``, ``t ~ U(0, 1)``;
- diffusion, ``T`` steps (eq. 14): ``½ T expm1(γ_t - γ_s) ‖ε - ε̂‖²``, ``s = t - 1/T``,
  ``t`` uniform on ``{1/T, .., 1}``.

Bits per dimension divide the sum by ``D ln 2``. γ, γ' and the decoder's log-softmax are
float32/64 and run outside any autocast; only ``ε̂`` comes from the (possibly bf16) network.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from udpm.errors import UDPMError
from udpm.processes.vdm import alpha_sigma

VOCAB = 256  # 8-bit data


# --- 8-bit data ------------------------------------------------------------------------------


def to_bins(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit value ``k`` of ``x = (2k + 1)/256 - 1``, or of the loader's ``k/127.5 - 1``.

    Rounds to the nearest bin, so either convention of the [-1, 1] map gives back ``k``
    exactly: both put value ``k`` within half a bin of centre ``k``.
    """
    return torch.round((x.double() + 1) * (VOCAB / 2) - 0.5).clamp(0, VOCAB - 1).long()


def bin_centres(k: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """``x_k = (2k + 1)/256 - 1`` (float32) for ``k`` (default: all 256 values)."""
    if k is None:
        k = torch.arange(VOCAB, device=device)
    return ((2 * k.double() + 1) / VOCAB - 1).float()


def decoder_log_probs(z0_scaled: torch.Tensor, gamma_0: torch.Tensor) -> torch.Tensor:
    """``log p(x = x_k | z_0)`` for every ``k``: (N, C, H, W) -> (N, C, H, W, 256), float32.

    Args:
        z0_scaled: ``z_0/α_0``.
        gamma_0: ``γ_0``, 0-d.
    """
    centres = bin_centres(device=z0_scaled.device)
    with _no_autocast(z0_scaled.device):
        inv_var = torch.exp(-gamma_0).float()
        logits = -0.5 * inv_var * (z0_scaled.float()[..., None] - centres) ** 2
        return torch.log_softmax(logits, dim=-1)


def decode(z0: torch.Tensor, gamma_0: torch.Tensor) -> torch.Tensor:
    """The most likely 8-bit image under ``p(x | z_0)``, as bin centres in [-1, 1].

    The logits are a Gaussian in the bin centre, so the arg max is the nearest centre to
    ``z_0/α_0``.
    """
    alpha_0, _ = alpha_sigma(gamma_0)
    return bin_centres(to_bins(z0.double() / alpha_0))


# --- the three terms -------------------------------------------------------------------------


def prior_kl(x: torch.Tensor, gamma_1: torch.Tensor) -> torch.Tensor:
    """``KL(q(z_1 | x) ‖ N(0, I))`` per image, (N,) nats."""
    var_1 = torch.sigmoid(gamma_1)
    terms = (1 - var_1) * x.double() ** 2 + var_1 - torch.nn.functional.logsigmoid(gamma_1) - 1
    return 0.5 * terms.flatten(1).sum(1)


def reconstruction(x: torch.Tensor, eps_0: torch.Tensor, gamma_0: torch.Tensor) -> torch.Tensor:
    """``-log p(x | z_0)`` per image for ``z_0 = α_0 x + σ_0 ε_0``, (N,) nats, float64.

    ``z_0/α_0 = x + e^{γ_0/2} ε_0``, since ``σ_0/α_0 = e^{γ_0/2}``. The softmax runs over the
    bins within reach of ``z_0/α_0`` only (:func:`_reach`): every bin left out is more than
    12 decoder standard deviations further from it than the nearest bin, so its weight is
    below ``e^{-72}`` of the largest and the result equals the 256-way one to float64
    precision, at a fraction of the cost (in float64, outside autocast).
    """
    k = to_bins(x)
    z0_scaled = x.double() + torch.exp(0.5 * gamma_0) * eps_0.double()
    reach = _reach(gamma_0, eps_0)
    bins = k[..., None] + torch.arange(-reach, reach + 1, device=x.device)
    with _no_autocast(x.device):
        centres = (2 * bins.clamp(0, VOCAB - 1).double() + 1) / VOCAB - 1
        logits = -0.5 * torch.exp(-gamma_0) * (z0_scaled[..., None] - centres) ** 2
        logits = logits.masked_fill((bins < 0) | (bins >= VOCAB), -math.inf)
        log_prob = logits[..., reach] - torch.logsumexp(logits, dim=-1)
    return -log_prob.flatten(1).sum(1)


def _reach(gamma_0: torch.Tensor, eps_0: torch.Tensor) -> int:
    """Bins either side of ``x``'s that hold every bin within 12 std of ``z_0/α_0``'s nearest."""
    std = math.exp(0.5 * float(gamma_0.detach()))  # of z_0/α_0 around x, in data units
    offset = std * float(eps_0.abs().max()) if eps_0.numel() else 0.0
    bins = math.ceil((offset + 12 * std) * VOCAB / 2) + 1  # a bin is 2/256 wide
    return min(bins, VOCAB - 1)


def diffusion_continuous(eps, eps_hat, gamma_slope) -> torch.Tensor:
    """``½ γ'(t) ‖ε - ε̂‖²`` per image (eq. 17), (N,) nats; ``gamma_slope`` (N,)."""
    return 0.5 * gamma_slope * _sq_error(eps, eps_hat)


def diffusion_discrete(eps, eps_hat, gamma_t, gamma_s, T: int) -> torch.Tensor:
    """``½ T expm1(γ_t - γ_s) ‖ε - ε̂‖²`` per image (eq. 14), (N,) nats."""
    return 0.5 * T * torch.expm1(gamma_t - gamma_s) * _sq_error(eps, eps_hat)


def _sq_error(eps, eps_hat) -> torch.Tensor:
    return (eps.float() - eps_hat.float()).square().flatten(1).sum(1).double()


# --- the bound -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """The bound's terms per image, each (N,) float64 nats; ``dims`` is ``D = C·H·W``."""

    prior: torch.Tensor
    reconstruction: torch.Tensor
    diffusion: torch.Tensor
    dims: int

    @property
    def nats(self) -> torch.Tensor:
        return self.prior + self.reconstruction + self.diffusion

    @property
    def bpd(self) -> torch.Tensor:
        """``-log p(x)`` bound in bits per dimension, (N,)."""
        return self.nats / (self.dims * math.log(2))

    def term_bpd(self) -> dict[str, torch.Tensor]:
        scale = self.dims * math.log(2)
        return {
            "prior": self.prior / scale,
            "reconstruction": self.reconstruction / scale,
            "diffusion": self.diffusion / scale,
        }


def discrete_times(t: torch.Tensor, T: int) -> torch.Tensor:
    """``t`` moved up onto ``{1/T, .., 1}`` (VDM's ``ceil(t T)/T``; 0 goes to ``1/T``)."""
    return torch.ceil(t * T).clamp(min=1) / T


def vdm_bound(
    network,
    process,
    x: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    eps_0: torch.Tensor,
    T: int = 0,
    class_labels=None,
    autocast=None,
    shape_variance=None,
) -> Bound:
    """The bound's terms for data ``x`` (N, C, H, W) in [-1, 1] at times ``t`` (N,).

    Args:
        network: ``ε̂ = network(z_t, normalised γ_t, class_labels)``.
        process: a :class:`udpm.processes.vdm.VDMProcess` bound to the schedule γ.
        t: (N,) times in [0, 1] (moved onto the grid when ``T > 0``).
        eps, eps_0: standard normal noise of ``z_t`` and of ``z_0``, like ``x``.
        T: 0 for the continuous-time bound, else the number of steps.
        autocast: a context manager for the network call only (bf16 training).
        shape_variance: a :class:`ShapeVarianceGradient` that turns the gradient reaching
            the schedule's shape into that of the estimator's second moment (training).
    """
    x = bin_centres(to_bins(x)).to(eps.dtype)  # exact 8-bit data: x = (2k + 1)/256 - 1
    gamma_0, gamma_1 = process.schedule.ends()
    diffusion = diffusion_term(
        network, process, x, t, eps, T, class_labels, autocast, shape_variance
    )
    return Bound(prior_kl(x, gamma_1), reconstruction(x, eps_0, gamma_0), diffusion, x[0].numel())


def diffusion_term(
    network, process, x, t, eps, T=0, class_labels=None, autocast=None, shape_variance=None
) -> torch.Tensor:
    """The diffusion loss per image, (N,) nats, for any data ``x`` (not only 8-bit).

    ``½ w(t) ‖ε - ε̂(z_t, t)‖²`` with ``z_t = α_t x + σ_t ε`` and the weight ``w`` of
    :func:`gamma_and_weight`; arguments as :func:`vdm_bound`.
    """
    if T < 0:
        raise UDPMError(f"T must be 0 (continuous time) or positive, got {T}")
    gamma_t, weight = gamma_and_weight(process.schedule, t.to(x.device), T, shape_variance)
    alpha_t, sigma_t = (c.float().view(-1, 1, 1, 1) for c in alpha_sigma(gamma_t))
    z_t = alpha_t * x + sigma_t * eps
    with autocast or contextlib.nullcontext():
        eps_hat = network(z_t, process.normalise(gamma_t).float(), class_labels)
    return 0.5 * weight * _sq_error(eps, eps_hat)


def gamma_and_weight(schedule, t, T: int = 0, shape_variance=None):
    """``(γ_t, w_t)``: ``w = γ'(t)`` (``T = 0``) or ``T expm1(γ_t - γ_s)``, ``s = t - 1/T``.

    With ``T > 0``, ``t`` is first moved onto the grid (:func:`discrete_times`); both (N,)
    float64, differentiable in the schedule's parameters.
    """
    gamma_0, gamma_1 = schedule.ends()
    span = gamma_1 - gamma_0
    hook = shape_variance.attach if shape_variance is not None else (lambda u: u)
    if T == 0:
        u, du = schedule.shape_with_derivative(t)
        return gamma_0 + span * hook(u), span * hook(du)
    t = discrete_times(t.double(), T)
    u_t, u_s = hook(schedule.shape(t)), hook(schedule.shape(t - 1 / T))
    return gamma_0 + span * u_t, T * torch.expm1(span * (u_t - u_s))


class ShapeVarianceGradient:
    """Trains the schedule's shape to minimise the variance of the bound's estimate.

    The continuous-time bound does not depend on the shape between the end points (eq. 16),
    so ``∇ Var[L] = ∇ E[L²] = E[2 L ∇L]`` for the shape's parameters (VDM, Appendix I.2).
    :meth:`attach` passes the shape values through unchanged but registers a gradient hook
    that scales what reaches them per image by ``2 L_i`` (set with :meth:`set_losses` after
    the forward pass): the shape then gets the gradient of ``mean(L_i²)`` instead of
    ``mean(L_i)``, while the end points and the network keep the bound's gradient.
    """

    def __init__(self):
        self.scale: torch.Tensor | None = None

    def attach(self, u: torch.Tensor) -> torch.Tensor:
        if not u.requires_grad:
            return u
        u.register_hook(self._hook)
        return u

    def set_losses(self, losses: torch.Tensor) -> None:
        """``L_i`` per image, (N,), in the units of the loss being minimised."""
        self.scale = 2 * losses.detach()

    def _hook(self, grad: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            raise UDPMError("ShapeVarianceGradient: set_losses was not called before backward")
        return grad * self.scale.to(grad.dtype)


@contextlib.contextmanager
def _no_autocast(device: torch.device):
    with torch.autocast(device.type, enabled=False):
        yield
