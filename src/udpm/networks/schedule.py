"""VDM's noise schedule ``γ(t) = -logSNR(t)``: fixed linear, learned end points, or learned shape.

Kingma et al. 2021 (Variational Diffusion Models), Sec. 3.5 and Appendix I, and their code
(google-research/vdm, ``NoiseSchedule_*``). Every schedule here is written as

    γ(t) = γ_0 + (γ_1 - γ_0) · u(t),     u(0) = 0,  u(1) = 1,  u strictly increasing,

so its end points are exactly ``γ_0``, ``γ_1`` (the continuous-time bound depends on the
schedule only through them, eq. 16) and its shape ``u`` can be trained apart from them:

- ``"fixed"``: ``u(t) = t``, ``γ_0``, ``γ_1`` constant (VDM's ``NoiseSchedule_FixedLinear``);
- ``"scalar"``: ``u(t) = t``, ``γ_0`` and ``γ_1 = γ_0 + |w|`` learned (``NoiseSchedule_Scalar``);
- ``"monotone"``: ``u = (γ̃(t) - γ̃(0))/(γ̃(1) - γ̃(0))`` for VDM's monotone network ``γ̃``
  (``NoiseSchedule_NNet``: a linear term plus a 1024-wide sigmoid layer, all weights made
  positive), with learned end points as ``"scalar"``.

Weights are made positive with softplus (VDM takes ``|w|``): softplus is never 0, so ``γ̃``
stays *strictly* increasing whatever the optimiser does to the raw weights. All arithmetic
runs in float64, outside any autocast, so γ and γ' keep their precision.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from udpm.errors import UDPMError

ScheduleKind = Literal["fixed", "scalar", "monotone"]
SCHEDULE_KINDS = ("fixed", "scalar", "monotone")


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class MonotoneNet(nn.Module):
    """VDM's ``γ̃(t) = l1(t) + l3(φ(l2(2t - 1)))/K`` with ``φ(h) = 2 sigmoid(h) - 1``.

    All weights pass through softplus, so ``γ̃`` is strictly increasing in ``t``.
    """

    def __init__(self, features: int = 1024):
        super().__init__()
        self.features = features
        # VDM initialises l2, l3 from N(0, 0.01²) and l2's bias at 0.
        self.w1 = nn.Parameter(torch.zeros(()))  # softplus(0) = log 2: a positive slope
        self.w2 = nn.Parameter(0.01 * torch.randn(features))
        self.b2 = nn.Parameter(torch.zeros(features))
        self.w3 = nn.Parameter(0.01 * torch.randn(features))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (N,) float64 -> γ̃(t): (N,) float64."""
        w1, w2, b2, w3 = (p.double() for p in (self.w1, self.w2, self.b2, self.w3))
        h = 2 * torch.sigmoid((2 * t - 1)[:, None] * F.softplus(w2) + b2) - 1
        return F.softplus(w1) * t + h @ F.softplus(w3) / self.features


class NoiseSchedule(nn.Module):
    """``γ(t)`` for ``t ∈ [0, 1]``, increasing from ``γ_0`` (data) to ``γ_1`` (noise).

    Args:
        kind: ``"fixed"``, ``"scalar"`` or ``"monotone"`` (see the module docstring).
        gamma_min, gamma_max: the initial (for ``fixed``: the constant) ``γ_0`` and ``γ_1``;
            VDM's CIFAR-10 values are -13.3 and 5.
        features: width ``K`` of the monotone network.
    """

    def __init__(
        self,
        kind: str = "monotone",
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        features: int = 1024,
    ):
        super().__init__()
        if kind not in SCHEDULE_KINDS:
            raise UDPMError(f"unknown noise schedule {kind!r}; choose from {SCHEDULE_KINDS}")
        if not gamma_min < gamma_max:
            raise UDPMError(f"need gamma_min < gamma_max, got {gamma_min}, {gamma_max}")
        self.kind = kind
        gamma_0 = torch.tensor(float(gamma_min))
        gap = torch.tensor(_inverse_softplus(gamma_max - gamma_min))
        if kind == "fixed":
            self.register_buffer("gamma_0_raw", gamma_0)
            self.register_buffer("gap_raw", gap)
        else:
            self.gamma_0_raw = nn.Parameter(gamma_0)
            self.gap_raw = nn.Parameter(gap)
        self.shape_net = MonotoneNet(features) if kind == "monotone" else None

    def ends(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(γ_0, γ_1)``, 0-d float64."""
        gamma_0 = self.gamma_0_raw.double()
        return gamma_0, gamma_0 + F.softplus(self.gap_raw.double())

    def shape(self, t) -> torch.Tensor:
        """``u(t)``: (N,) float64, 0 at ``t = 0`` and 1 at ``t = 1`` exactly."""
        t = self._time(t)
        if self.shape_net is None:
            return t
        ends = self.shape_net(torch.tensor([0.0, 1.0], dtype=torch.float64, device=t.device))
        u = (self.shape_net(t.reshape(-1)) - ends[0]) / (ends[1] - ends[0])
        # Pin the end points (rounding must not move them off γ_0, γ_1) with a detached
        # correction, so that γ' and the gradients stay those of the network there too.
        flat = t.reshape(-1)
        fix = torch.where(flat == 0, -u, torch.where(flat == 1, 1 - u, torch.zeros_like(u)))
        return (u + fix.detach()).reshape(t.shape)

    def forward(self, t) -> torch.Tensor:
        """``γ(t)``, float64, shaped like ``t``."""
        gamma_0, gamma_1 = self.ends()
        return gamma_0 + (gamma_1 - gamma_0) * self.shape(t)

    def with_derivative(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(γ(t), γ'(t))`` with ``γ'`` by autograd, differentiable in the parameters."""
        return _with_derivative(self, self._time(t))

    def shape_with_derivative(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u(t), u'(t))``, as :meth:`with_derivative` for the shape alone."""
        return _with_derivative(self.shape, self._time(t))

    def _time(self, t) -> torch.Tensor:
        device = self.gamma_0_raw.device
        t = torch.as_tensor(t, dtype=torch.float64, device=device)
        if t.numel() and not bool(torch.all((t >= 0) & (t <= 1))):
            raise UDPMError(f"VDM times must lie in [0, 1], got {t.min().item()}..")
        return t

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def _with_derivative(fn, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(t)`` and its elementwise derivative (``create_graph``: it is trained through)."""
    t = t.detach().requires_grad_(True)
    with torch.enable_grad():
        value = fn(t)
        (slope,) = torch.autograd.grad(value.sum(), t, create_graph=True)
    return value, slope
