"""VDM's forward process: variance preserving, indexed by a (learned) ``γ(t) = -logSNR(t)``.

Kingma et al. 2021, Sec. 3: ``q(z_t | x) = N(α_t x, σ_t² I)`` with ``σ_t² = sigmoid(γ_t)``,
``α_t² = sigmoid(-γ_t)``, ``t ∈ [0, 1]``. The schedule ``γ`` is an ``nn.Module``
(:class:`udpm.networks.schedule.NoiseSchedule`) owned by the generator network, so that its
weights sit in the model file and in the EMA; the process only holds a reference to it and
keeps no parameters of its own. :meth:`VDMProcess.bind` re-points it at another network's
schedule (``udpm.Pipeline`` binds it to the EMA network it samples with).

The marginal/posterior algebra is the shared variance-preserving one of
:mod:`udpm.processes.gaussian`, written in ``logSNR = -γ``.
"""

from __future__ import annotations

import torch

from udpm.errors import UDPMError
from udpm.processes.gaussian import _VariancePreserving


class VDMProcess(_VariancePreserving):
    """Continuous time ``t ∈ [0, 1]`` with ``logSNR(t) = -γ(t)``.

    Args:
        schedule: ``γ``, a module mapping (N,) float64 times to (N,) float64; None leaves the
            process unbound until :meth:`bind`.
        gamma_min, gamma_max: the fixed range that normalises ``γ_t`` into the network's
            time input ``(γ_t - γ_min)/(γ_max - γ_min)`` (VDM's ``ScoreUNet``).
    """

    time_dtype = torch.float64

    def __init__(self, schedule=None, gamma_min: float = -13.3, gamma_max: float = 5.0):
        if not gamma_min < gamma_max:
            raise UDPMError(f"need gamma_min < gamma_max, got {gamma_min}, {gamma_max}")
        self.schedule = schedule
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    def bind(self, network) -> VDMProcess:
        """The same process on ``network.schedule`` (or on ``network`` if it is a schedule)."""
        return VDMProcess(getattr(network, "schedule", network), self.gamma_min, self.gamma_max)

    def gamma(self, t) -> torch.Tensor:
        """``γ(t)``, float64."""
        if self.schedule is None:
            raise UDPMError("this VDM process has no schedule; bind it to a VDM network")
        return self.schedule(t)

    def logsnr(self, t) -> torch.Tensor:
        return -self.gamma(t)

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``α_t = sqrt(sigmoid(-γ_t))``, ``σ_t = sqrt(sigmoid(γ_t))``, float64."""
        return alpha_sigma(self.gamma(t))

    def sample_times(self, n: int, generator=None) -> torch.Tensor:
        """Antithetic training times ``(u + k/n) mod 1``, ``k = 0..n-1`` (VDM's code)."""
        return antithetic_times(n, generator)

    def grid(self, steps: int) -> list[float]:
        """``[1, 1 - 1/T, .., 1/T]``: the start times of ``T`` steps that end at ``t = 0``."""
        if steps < 1:
            raise UDPMError(f"steps must be at least 1, got {steps}")
        return [1 - k / steps for k in range(steps)]

    def network_time(self, t) -> torch.Tensor:
        """The network's time input: ``γ_t`` normalised by the fixed range, float32."""
        return self.normalise(self.gamma(t)).float()

    def normalise(self, gamma: torch.Tensor) -> torch.Tensor:
        return (gamma - self.gamma_min) / (self.gamma_max - self.gamma_min)

    def posterior_mean_var(self, z_t, x0, t, s):
        """``q(z_s | z_t, x)`` for ``s < t``: ``(mean, var)``, var (N, 1, 1, 1)."""
        return self._posterior(z_t, x0, t, s)

    def posterior_sample(self, z_t, x0, t, s, noise: torch.Tensor | None = None):
        """Draw from :meth:`posterior_mean_var`; deterministic given ``noise``."""
        return self._posterior_sample(z_t, x0, t, s, noise)

    def to_config(self) -> dict:
        return {"kind": "vdm", "gamma_min": self.gamma_min, "gamma_max": self.gamma_max}

    def __repr__(self) -> str:
        kind = getattr(self.schedule, "kind", None)
        return f"VDMProcess(schedule={kind!r}, γ range [{self.gamma_min}, {self.gamma_max}])"


def alpha_sigma(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(α, σ) = (sqrt(sigmoid(-γ)), sqrt(sigmoid(γ)))``, in ``γ``'s dtype."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def antithetic_times(n: int, generator=None) -> torch.Tensor:
    """``(u + k/n) mod 1`` for one ``u ~ U[0, 1)``: low-discrepancy times, float64 (CPU)."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return torch.remainder(u + torch.arange(n, dtype=torch.float64) / n, 1.0)
