"""The contract every forward process follows, so that losses and samplers need no ``isinstance``.

Arguments come in one order everywhere: the noisy sample first, then what it is conditioned
on, then the time(s), then the noise. Times are what the process indexes by (a level ``l``
for UDPM, an index ``t`` for DDPM, ``t ∈ [0, 1]`` for continuous time); ``network_time``
maps them to the network's time input. Noise is always passed in (``None`` draws it from the
global generator, for quick experiments only). A process holds no networks and no state.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Process(Protocol):
    def marginal(self, x0: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(x_t | x_0)``: ``(mean, std)``.

        ``std`` broadcasts against ``mean``: a 0-d tensor for one time (a Python number, a
        0-d tensor or a level), shaped (N, 1, 1, 1) for per-sample times (N,).
        """

    def q_sample(self, x0: torch.Tensor, t: Any, noise: torch.Tensor | None = None):
        """``x_t = mean + std · noise``, deterministic given ``noise ~ N(0, I)``."""

    def posterior_sample(self, x_t, x0_hat, t, *args, noise: torch.Tensor | None = None):
        """One reverse step drawn from the posterior given an estimate of the clean signal.

        UDPM: ``(x_l, h, l)`` with ``h ≈ H^{l-1} x_0``; Gaussian: ``(x_t, x̂_0, t, s)``.
        """

    def network_time(self, t: Any) -> torch.Tensor:
        """The network's time input for ``t`` (float32, in (0, 1))."""


class GaussianProcess(Process, Protocol):
    """Variance-preserving processes: ``α_t² + σ_t² = 1`` (DDPM, simple diffusion, VDM)."""

    time_dtype: torch.dtype

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]: ...

    def logsnr(self, t) -> torch.Tensor: ...

    def sample_times(self, n: int, generator=None) -> torch.Tensor: ...

    def grid(self, steps: int) -> list: ...
