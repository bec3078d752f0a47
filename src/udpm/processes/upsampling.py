"""The UDPM upsampling process: marginals, the exact posterior and its closed-form draw.

Following Abu-Hussein and Giryes (2024), Sec. 3 and Lemma 1 (symbols in ``NOTATION.md``): with
``a = α_l²/σ_l²``, ``b = 1/s_{l-1}²``, ``c = ||w||²`` and ``P = HᵀH/c``,

    Σ_l = (a HᵀH + b I)^{-1} = (1/b) I + (1/(ac+b) - 1/b) P
    μ_l = Σ_l ((α_l/σ_l²) Hᵀ x_l + b ᾱ_{l-1} h),     h = H^{l-1} x_0.

No networks and no random state live here: every noise tensor is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from udpm.errors import UDPMError
from udpm.operators import Downsample

PAPER_ALPHAS = (0.5, 0.2, 1e-3)  # UDPM paper, every data set
PAPER_SIGMAS = (0.1, 0.2, 0.3)


class UpsamplingProcess:
    """``q(x_l | x_{l-1}) = N(α_l H x_{l-1}, σ_l² I)`` for ``l = 1..L``.

    Args:
        alphas: ``α_1..α_L`` (positive).
        sigmas: ``σ_1..σ_L`` (positive), the per-step noise standard deviations.
        operator: the degradation ``H``; ``None`` means ``Downsample(2)``.
        scalar_posterior: reproduce the authors' code, ``Σ ≈ 1/(a + b) I``, instead of the
            exact covariance. For comparison only: it shrinks the mean and the noise in the
            detail subspace (the null space of ``H``).
    """

    def __init__(
        self,
        alphas: Sequence[float] = PAPER_ALPHAS,
        sigmas: Sequence[float] = PAPER_SIGMAS,
        operator: Downsample | None = None,
        scalar_posterior: bool = False,
    ):
        alphas, sigmas = [float(a) for a in alphas], [float(s) for s in sigmas]
        if len(alphas) != len(sigmas):
            raise UDPMError(
                f"alphas and sigmas must have the same length, got {len(alphas)} and {len(sigmas)}"
            )
        if not alphas:
            raise UDPMError("the process needs at least one level")
        if any(not s > 0 for s in sigmas):
            raise UDPMError(f"sigmas must all be positive, got {sigmas}")
        if any(not a > 0 for a in alphas):
            raise UDPMError(f"alphas must all be positive, got {alphas}")
        self.alphas, self.sigmas = alphas, sigmas
        self.operator = operator if operator is not None else Downsample(2)
        self.scalar_posterior = scalar_posterior
        self.alpha_bar = [1.0]  # ᾱ_0 = 1
        self.marginal_var = [0.0]  # s_0² = 0
        c = self.operator.norm_sq
        for alpha, sigma in zip(alphas, sigmas):
            self.alpha_bar.append(self.alpha_bar[-1] * alpha)
            # s_l² = α_l² c s_{l-1}² + σ_l², which unrolls to the closed form
            # Σ_k σ_k² (ᾱ_l/ᾱ_k)² c^{l-k}; the ||w||² factor is kept (Lemma 1).
            self.marginal_var.append(alpha**2 * c * self.marginal_var[-1] + sigma**2)

    @property
    def levels(self) -> int:
        """``L``, the number of levels."""
        return len(self.alphas)

    @property
    def factor(self) -> int:
        return self.operator.factor

    def _check_level(self, l: int, lowest: int = 1) -> None:
        if not lowest <= l <= self.levels:
            raise UDPMError(f"level must be in {lowest}..{self.levels}, got {l}")

    def check_resolution(self, size: int, levels: int | None = None) -> None:
        """Raise unless ``size`` is divisible by ``γ^levels`` (default ``γ^L``)."""
        levels = self.levels if levels is None else levels
        step = self.factor**levels
        if size % step:
            raise UDPMError(
                f"image size {size} is not divisible by {self.factor}^{levels} = {step}, "
                f"which {levels} levels of downsampling need"
            )

    def level_size(self, size: int, l: int) -> int:
        """Side length of ``x_l`` for an image of side ``size``."""
        self.check_resolution(size)
        return size // self.factor**l

    def level_time(self, l: int) -> float:
        """The network's level input ``t = (l - 0.5)/L``, as in the authors' code."""
        return (l - 0.5) / self.levels

    def network_time(self, l: int) -> torch.Tensor:
        """:meth:`level_time` as a 0-d float32 tensor (the process contract's name)."""
        self._check_level(l)
        return torch.tensor(self.level_time(l), dtype=torch.float32)

    def degrade(self, x: torch.Tensor, times: int) -> torch.Tensor:
        """``H^times x``."""
        for _ in range(times):
            x = self.operator(x)
        return x

    # --- forward process -------------------------------------------------------------

    def marginal(self, x0: torch.Tensor, l: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(x_l | x_0) = N(ᾱ_l H^l x_0, s_l² I)``; returns ``(mean, std)``, std 0-d."""
        self._check_level(l, lowest=0)
        self.check_resolution(x0.shape[-1], l)
        self.check_resolution(x0.shape[-2], l)
        mean = self.alpha_bar[l] * self.degrade(x0, l)
        std = torch.tensor(math.sqrt(self.marginal_var[l]), dtype=x0.dtype, device=x0.device)
        return mean, std

    def q_sample(self, x0: torch.Tensor, l: int, noise: torch.Tensor | None = None):
        """Draw ``x_l ~ q(x_l | x_0)``; deterministic given ``noise ~ N(0, I)``."""
        mean, std = self.marginal(x0, l)
        noise = torch.randn_like(mean) if noise is None else noise
        _check_shape(noise, mean.shape, "noise")
        return mean + std * noise

    def q_step(self, x_prev: torch.Tensor, l: int, noise: torch.Tensor | None = None):
        """One forward step ``x_l ~ q(x_l | x_{l-1})``."""
        self._check_level(l)
        mean = self.alphas[l - 1] * self.operator(x_prev)
        noise = torch.randn_like(mean) if noise is None else noise
        _check_shape(noise, mean.shape, "noise")
        return mean + self.sigmas[l - 1] * noise

    def prior_sample(self, noise: torch.Tensor) -> torch.Tensor:
        """``x_L ~ N(0, s_L² I)``: the marginal the network saw in training (not ``N(0, I)``)."""
        return math.sqrt(self.marginal_var[self.levels]) * noise

    # --- reverse process -------------------------------------------------------------

    def _coefficients(self, l: int) -> tuple[float, float, float]:
        """``(a, b, c)`` of the posterior at level ``l >= 2``."""
        a = self.alphas[l - 1] ** 2 / self.sigmas[l - 1] ** 2
        b = 1.0 / self.marginal_var[l - 1]
        return a, b, self.operator.norm_sq

    def _check_pair(self, x_l: torch.Tensor, h: torch.Tensor) -> None:
        f = self.factor
        expected = (*x_l.shape[:-2], x_l.shape[-2] * f, x_l.shape[-1] * f)
        _check_shape(h, expected, "h (the estimate of H^{l-1} x_0)")

    def _apply_cov(self, v: torch.Tensor, l: int, power: float) -> torch.Tensor:
        """``Σ_l^power v`` for ``power`` 1 or 1/2, via ``Σ = (1/b)(I - P) + 1/(ac+b) P``."""
        a, b, c = self._coefficients(l)
        if self.scalar_posterior:
            return (1.0 / (a + b)) ** power * v
        detail, coarse = (1.0 / b) ** power, (1.0 / (a * c + b)) ** power
        return detail * v + (coarse - detail) * self.operator.project(v)

    def posterior_cov(self, v: torch.Tensor, l: int) -> torch.Tensor:
        """``Σ_l v``, the exact posterior covariance applied to ``v`` (level ``l-1``'s size)."""
        self._check_level(l)
        if l == 1:  # s_0 = 0: the posterior is a point mass
            return torch.zeros_like(v)
        return self._apply_cov(v, l, 1.0)

    def _posterior_rhs(self, x_l: torch.Tensor, h: torch.Tensor, l: int) -> torch.Tensor:
        """``(α_l/σ_l²) Hᵀ x_l + b ᾱ_{l-1} h``, the vector ``Σ_l`` multiplies in ``μ_l``."""
        _, b, _ = self._coefficients(l)
        alpha, sigma = self.alphas[l - 1], self.sigmas[l - 1]
        return (alpha / sigma**2) * self.operator.adjoint(x_l) + b * self.alpha_bar[l - 1] * h

    def posterior_mean(self, x_l: torch.Tensor, h: torch.Tensor, l: int) -> torch.Tensor:
        """``μ_l``; ``h`` stands for ``H^{l-1} x_0`` (or the network's estimate of it)."""
        self._check_level(l)
        self._check_pair(x_l, h)
        if l == 1:
            return h
        return self._apply_cov(self._posterior_rhs(x_l, h, l), l, 1.0)

    def posterior_sample(
        self, x_l: torch.Tensor, h: torch.Tensor, l: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Exact draw ``x_{l-1} = μ_l + Σ_l^{1/2} z``; deterministic given ``noise = z``.

        ``Σ^{1/2} = b^{-1/2} I + ((ac+b)^{-1/2} - b^{-1/2}) P``. The mean and the noise share
        one projection, so a draw costs one ``H`` and one ``Hᵀ`` (plus the ``Hᵀ x_l``).
        At ``l = 1`` it returns ``h``: the posterior is a point mass there.
        """
        self._check_level(l)
        self._check_pair(x_l, h)
        if l == 1:
            return h
        z = torch.randn_like(h) if noise is None else noise
        _check_shape(z, h.shape, "noise")
        a, b, c = self._coefficients(l)
        rhs = self._posterior_rhs(x_l, h, l)
        if self.scalar_posterior:
            return rhs / (a + b) + z / math.sqrt(a + b)
        # x = [rhs/b + z/√b] + P[(1/(ac+b) - 1/b) rhs + ((ac+b)^{-1/2} - b^{-1/2}) z]
        inner = (1 / (a * c + b) - 1 / b) * rhs + ((a * c + b) ** -0.5 - b**-0.5) * z
        return rhs / b + z / math.sqrt(b) + self.operator.project(inner)

    def to_config(self) -> dict:
        """A plain dict that rebuilds this process with :func:`process_from_config`."""
        op = self.operator
        return {
            "alphas": list(self.alphas),
            "sigmas": list(self.sigmas),
            "factor": op.factor,
            "kernel": None if op.is_box else op.kernel.tolist(),
            "scalar_posterior": self.scalar_posterior,
        }

    def __repr__(self) -> str:
        return (
            f"UpsamplingProcess(alphas={self.alphas}, sigmas={self.sigmas}, "
            f"operator={self.operator!r}, scalar_posterior={self.scalar_posterior})"
        )


def process_from_config(config: dict) -> UpsamplingProcess:
    """Inverse of :meth:`UpsamplingProcess.to_config`."""
    kernel = config.get("kernel")
    operator = Downsample(
        config.get("factor", 2),
        None if kernel is None else torch.tensor(kernel, dtype=torch.float64),
    )
    return UpsamplingProcess(
        config["alphas"],
        config["sigmas"],
        operator,
        scalar_posterior=config.get("scalar_posterior", False),
    )


def _check_shape(tensor: torch.Tensor, expected, what: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise UDPMError(f"{what} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
