"""Pure latent arithmetic: variance-preserving mixes, the four-corner grid and slerp.

Nothing here knows about networks. Every function takes noise maps (any shape) and mixing
positions, and returns noise maps. Iid ``N(0, 1)`` inputs give ``N(0, 1)`` outputs for the
variance-preserving mixes, because their weights' squares sum to one.
"""

from __future__ import annotations

import math

import torch

from udpm.errors import UDPMError


def grid_coordinates(steps: int) -> list[float]:
    """The ``steps`` values of ``η`` (rows) or ``δ`` (columns) along the grid, from 1 to 0.

    Position ``j`` is ``cos(π/2 · j/(steps-1))``: the mix ``δ a + √(1-δ²) b`` then moves at
    a constant angle per step (weights ``cos θ, sin θ``). The ends are set exactly to 1 and 0
    (``cos(π/2)`` is 6e-17 in floating point), so the grid's corners are exactly the corner
    latents.
    """
    if steps < 2:
        raise UDPMError(f"interpolation needs at least 2 steps, got {steps}")
    values = [math.cos(math.pi / 2 * j / (steps - 1)) for j in range(steps)]
    values[0], values[-1] = 1.0, 0.0
    return values


def _complement(x: float) -> float:
    """``√(1 - x²)``, exactly 0 at ``x = 1`` and exactly 1 at ``x = 0``."""
    return math.sqrt(max(0.0, 1.0 - x * x))


def corner_weights(eta: float, delta: float) -> tuple[float, float, float, float]:
    """The weights of ``e1..e4`` in ``η(δ e1 + √(1-δ²) e2) + √(1-η²)(δ e3 + √(1-δ²) e4)``.

    Their squares sum to ``η²δ² + η²(1-δ²) + (1-η²)δ² + (1-η²)(1-δ²) = 1``.
    """
    for name, v in (("eta", eta), ("delta", delta)):
        if not 0.0 <= v <= 1.0:
            raise UDPMError(f"{name} must be in [0, 1], got {v}")
    eta_c, delta_c = _complement(eta), _complement(delta)
    return (eta * delta, eta * delta_c, eta_c * delta, eta_c * delta_c)


def mix_corners(corners, eta: float, delta: float) -> torch.Tensor:
    """The paper's four-corner mix of one noise map (figures 5 and 13).

    ``η = δ = 1`` gives ``e1``, ``η = 1, δ = 0`` gives ``e2``, ``η = 0, δ = 1`` gives ``e3``
    and ``η = δ = 0`` gives ``e4``, bit for bit.
    """
    e1, e2, e3, e4 = corners
    w1, w2, w3, w4 = corner_weights(eta, delta)
    return w1 * e1 + w2 * e2 + w3 * e3 + w4 * e4


def mix_pair(a: torch.Tensor, b: torch.Tensor, delta: float) -> torch.Tensor:
    """``δ a + √(1-δ²) b``: the two-latent row, which is the top row of the four-corner grid."""
    return mix_corners((a, b, a, b), 1.0, delta)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (``t = 0``) to ``b`` (``t = 1``), both flattened.

    With ``Ω`` the angle between ``a`` and ``b``, the result is
    ``sin((1-t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b``. For independent Gaussian maps ``Ω ≈ π/2``
    and this is close to the variance-preserving mix; unlike it, the norm is kept exactly
    when ``|a| = |b|``. Parallel maps fall back to linear interpolation.
    """
    if not 0.0 <= t <= 1.0:
        raise UDPMError(f"t must be in [0, 1], got {t}")
    if t in (0.0, 1.0):
        return (b if t else a).clone()
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum() / (a64.norm() * b64.norm()).clamp_min(1e-30)
    omega = float(torch.arccos(cos.clamp(-1.0, 1.0)))
    if math.sin(omega) < 1e-6:
        return ((1.0 - t) * a64 + t * b64).to(a.dtype)
    w_a = math.sin((1.0 - t) * omega) / math.sin(omega)
    w_b = math.sin(t * omega) / math.sin(omega)
    return (w_a * a64 + w_b * b64).to(a.dtype)


def perturb_map(e: torch.Tensor, n: torch.Tensor, gamma: float) -> torch.Tensor:
    """``γ e + √(1-γ²) n``: a variance-preserving step of size ``√(1-γ²)`` away from ``e``."""
    check_gamma(gamma)
    return gamma * e + _complement(gamma) * n


def check_gamma(gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and 0.0 <= gamma <= 1.0):
        raise UDPMError(f"gamma must be in [0, 1], got {gamma}")
