"""Variance-preserving Gaussian diffusion: DDPM's discrete chain and simple diffusion's logSNR.

Both processes have ``q(x_t | x_0) = N(α_t x_0, σ_t² I)`` with ``α_t² + σ_t² = 1`` and differ
only in how ``t`` indexes the schedule:

- :class:`DiscreteGaussianProcess` (Ho et al. 2020, eq. 4): ``t`` is an index ``0..T-1``
  (paper step ``t + 1``), ``α_t² = ᾱ_t = ∏_{k≤t} (1 - β_k)``.
- :class:`ContinuousGaussianProcess` (Kingma et al. 2021; Hoogeboom et al. 2023): ``t ∈ [0, 1]``,
  ``α_t² = sigmoid(logSNR(t))``, ``σ_t² = sigmoid(-logSNR(t))``.

Both follow the process contract of :mod:`udpm.processes.contract`: ``marginal(x0, t)``,
``q_sample(x0, t, noise)``, ``posterior_sample(x_t, x0, t, s, noise)``, ``network_time(t)``.

For ``s < t`` the step ``q(x_t | x_s) = N(α_{t|s} x_s, σ_{t|s}² I)`` has ``α_{t|s} = α_t/α_s``
and ``σ_{t|s}² = 1 - α_{t|s}²`` (the respaced ``β``); the posterior is (Kingma et al. 2021,
eq. 32-33; Ho et al. 2020, eq. 6-7 for ``s = t - 1``)

    q(x_s | x_t, x_0) = N(μ, σ_{t→s}² I),
    μ = α_{t|s} σ_s²/σ_t² x_t + α_s σ_{t|s}²/σ_t² x_0,     σ_{t→s}² = σ_{t|s}² σ_s²/σ_t².

With ``s = t - 1`` this is DDPM's ``q(x_{t-1} | x_t, x_0)`` with variance ``β̃_t``. The code
uses ``c = σ_{t|s}²/σ_t² = 1 - SNR_t/SNR_s = -expm1(logSNR_t - logSNR_s)``, which stays
accurate when the two times are close. Schedules are float64; no random state lives here
(noise is passed in, or drawn with ``randn_like`` when omitted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from udpm.errors import UDPMError
from udpm.errors import check_shape as _check_shape

SCHEDULES = ("cosine",)  # continuous-time logSNR schedules


class _VariancePreserving:
    """Marginal and posterior math shared by both processes, written in ``(α, σ, logSNR)``."""

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def logsnr(self, t) -> torch.Tensor:
        raise NotImplementedError

    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(x_t | x_0) = N(α_t x_0, σ_t² I)``.

        Args:
            x0: (N, C, H, W) data.
            t: (N,) times (or one time for the whole batch).

        Returns:
            ``(mean, std)``: mean (N, C, H, W) and ``σ_t`` shaped (N, 1, 1, 1), in ``x0``'s dtype.
        """
        alpha, sigma = self.alpha_sigma(t)
        return _expand(alpha, x0) * x0, _expand(sigma, x0)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``x_t = α_t x_0 + σ_t ε``; deterministic given ``noise = ε ~ N(0, I)``."""
        mean, std = self.marginal(x0, t)
        noise = torch.randn_like(x0) if noise is None else noise
        _check_shape(noise, x0.shape, "noise")
        return mean + std * noise

    def _posterior(self, x_t, x0, t, s) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, σ_{t→s}²)`` of ``q(x_s | x_t, x_0)``; variance shaped (N, 1, 1, 1)."""
        _check_shape(x_t, x0.shape, "x_t")
        alpha_t, _ = self.alpha_sigma(t)
        alpha_s, sigma_s = self.alpha_sigma(s)
        lam_t, lam_s = self.logsnr(t), self.logsnr(s)
        if torch.any(lam_s <= lam_t):
            raise UDPMError("the posterior q(x_s | x_t, x_0) needs s earlier (less noisy) than t")
        c = -torch.expm1(lam_t - lam_s)  # σ_{t|s}²/σ_t²
        # α_{t|s} σ_s²/σ_t² = (α_s/α_t) SNR_t/SNR_s = (α_s/α_t)(1 - c)
        coef_xt = alpha_s / alpha_t * torch.exp(lam_t - lam_s)
        mean = _expand(coef_xt, x_t) * x_t + _expand(alpha_s * c, x0) * x0
        return mean, _expand(sigma_s**2 * c, x0)

    def _posterior_sample(self, x_t, x0, t, s, noise) -> torch.Tensor:
        mean, var = self._posterior(x_t, x0, t, s)
        noise = torch.randn_like(mean) if noise is None else noise
        _check_shape(noise, mean.shape, "noise")
        return mean + var.sqrt() * noise


class DiscreteGaussianProcess(_VariancePreserving):
    """DDPM's forward chain ``q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I)``.

    Indices run ``t = 0..T-1`` (the paper's ``1..T``); index ``-1`` stands for the data, with
    ``ᾱ_{-1} = 1``. The network sees the time ``(t + 0.5)/T`` (see :meth:`network_time`).

    Args:
        betas: ``β_0..β_{T-1}``, each in (0, 1).
    """

    def __init__(self, betas: Sequence[float] | torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().clone()
        if betas.numel() < 1:
            raise UDPMError("a discrete process needs at least one step")
        if not bool(torch.all((betas > 0) & (betas < 1))):
            raise UDPMError("betas must all lie in (0, 1)")
        self.betas = betas  # β_t, float64
        # ᾱ_t = ∏_{k≤t} (1 - β_k). (No ``alphas`` attribute: in UDPM's process α_l is a
        # per-level scale, and one name must not mean two things.)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, 0)
        self._config = {"betas": betas.tolist()}  # how to_config rebuilds it

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """Ho et al.'s schedule: ``β`` linear from ``beta_start`` to ``beta_end`` over ``T``."""
        config = {"schedule": "linear", "T": T, "beta_start": beta_start, "beta_end": beta_end}
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))._named(config)

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195):
        """Latent diffusion's schedule (CompVis' "linear"): ``√β`` linear, ``β_start..β_end``."""
        config = dict(schedule="scaled_linear", T=T, beta_start=beta_start, beta_end=beta_end)
        root = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64)
        return cls(root**2)._named(config)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """Nichol and Dhariwal's ``ᾱ(u) ∝ cos²((u + s)/(1 + s) · π/2)``, ``β ≤ max_beta``.

        ``β_t = 1 - ᾱ((t+1)/T)/ᾱ(t/T)``, as in improved-diffusion and diffusers'
        ``squaredcos_cap_v2``.
        """

        def f(u):
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
        config = {"schedule": "cosine", "T": T, "s": s, "max_beta": max_beta}
        return cls(betas)._named(config)

    def _named(self, config: dict) -> DiscreteGaussianProcess:
        self._config = config  # a preset stores its arguments, not 1000 betas
        return self

    @property
    def num_timesteps(self) -> int:
        """``T``."""
        return self.betas.numel()

    def _index(self, t, lowest: int = 0) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise UDPMError(f"discrete times must be integer indices, got dtype {t.dtype}")
        t = t.to(torch.long)
        if t.numel() and not bool(torch.all((t >= lowest) & (t < self.num_timesteps))):
            raise UDPMError(
                f"timestep indices must lie in {lowest}..{self.num_timesteps - 1}, got "
                f"{t.min().item()}..{t.max().item()}"
            )
        return t

    def alpha_bar(self, t) -> torch.Tensor:
        """``ᾱ_t`` (float64, on ``t``'s device) for indices ``t`` in ``-1..T-1``; ``ᾱ_{-1} = 1``."""
        t = self._index(t, lowest=-1)
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return table.to(t.device)[t + 1]

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α_t, σ_t) = (sqrt(ᾱ_t), sqrt(1 - ᾱ_t))``, float64."""
        alpha_bar = self.alpha_bar(t)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def logsnr(self, t) -> torch.Tensor:
        """``log(ᾱ_t/(1 - ᾱ_t))``, float64; ``+inf`` at ``t = -1``."""
        alpha_bar = self.alpha_bar(t)
        return alpha_bar.log() - torch.log1p(-alpha_bar)

    time_dtype = torch.long

    def sample_times(self, n: int, generator=None) -> torch.Tensor:
        """Training times ``t ~ U{0..T-1}`` (Ho et al. 2020, Algorithm 1), on the CPU."""
        return torch.randint(0, self.num_timesteps, (n,), generator=generator)

    def grid(self, steps: int) -> list[int]:
        """The default sampling grid of ``steps`` indices (the leading spacing)."""
        from udpm.processes.grids import timestep_grid

        return timestep_grid(self.num_timesteps, steps)

    def network_time(self, t) -> torch.Tensor:
        """The network's time input ``(t + 0.5)/T`` ∈ (0, 1), float32.

        This is the paper's ``(t_paper - 0.5)/T`` with ``t_paper = t + 1``, the same
        convention as UDPM's level time ``(l - 0.5)/L``. A network that wants the integer
        index back computes ``round(time · T - 0.5)``.
        """
        t = self._index(t)
        return ((t.to(torch.float64) + 0.5) / self.num_timesteps).to(torch.float32)

    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)`` for indices ``t`` (N,) in ``0..T-1``.

        Returns ``(mean, std)``: mean (N, C, H, W), std (N, 1, 1, 1).
        """
        self._index(t)
        return super().marginal(x0, t)

    def q_step(self, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None):
        """One forward step ``x_t = sqrt(1 - β_t) x_{t-1} + sqrt(β_t) z`` (``x_{-1} = x_0``)."""
        t = self._index(t)
        noise = torch.randn_like(x_prev) if noise is None else noise
        _check_shape(noise, x_prev.shape, "noise")
        beta = self.betas.to(t.device)[t]
        return _expand((1 - beta).sqrt(), x_prev) * x_prev + _expand(beta.sqrt(), x_prev) * noise

    def _prev(self, t, t_prev):
        t = self._index(t)
        t_prev = t - 1 if t_prev is None else self._index(t_prev, lowest=-1)
        if torch.any(t_prev >= t):
            raise UDPMError("t_prev must be smaller than t")
        return t, t_prev

    def posterior_mean_var(self, x_t: torch.Tensor, x0: torch.Tensor, t, t_prev=None):
        """``q(x_{t_prev} | x_t, x_0)``; ``t_prev`` defaults to ``t - 1`` (``-1`` is the data).

        Mean ``sqrt(ᾱ_s) β/(1-ᾱ_t) x_0 + sqrt(ᾱ_t/ᾱ_s)(1-ᾱ_s)/(1-ᾱ_t) x_t`` and variance
        ``β̃ = (1-ᾱ_s)/(1-ᾱ_t) β`` with ``s = t_prev`` and the respaced ``β = 1 - ᾱ_t/ᾱ_s``
        (``β_t`` itself when ``s = t - 1``).

        Returns:
            ``(mean, var)``: mean (N, C, H, W), var (N, 1, 1, 1) (a variance, not a std).
        """
        t, t_prev = self._prev(t, t_prev)
        return self._posterior(x_t, x0, t, t_prev)

    def posterior_sample(self, x_t, x0, t, t_prev=None, noise: torch.Tensor | None = None):
        """Draw from :meth:`posterior_mean_var`; deterministic given ``noise``."""
        t, t_prev = self._prev(t, t_prev)
        return self._posterior_sample(x_t, x0, t, t_prev, noise)

    def to_config(self) -> dict:
        """A plain dict that rebuilds this process with :func:`gaussian_process_from_config`."""
        return {"kind": "discrete", **self._config}

    def __repr__(self) -> str:
        name = self._config.get("schedule", "custom")
        return f"DiscreteGaussianProcess({name}, T={self.num_timesteps})"


class ContinuousGaussianProcess(_VariancePreserving):
    """Continuous time ``t ∈ [0, 1]`` with a cosine logSNR, optionally shifted for resolution.

    ``logSNR(t) = -2 log tan(θ(t)) + shift(t)``, where ``θ`` maps ``[0, 1]`` linearly onto
    ``[θ_min, θ_max]`` with ``θ_min = atan(exp(-logsnr_max/2))`` and
    ``θ_max = atan(exp(-logsnr_min/2))``: the unshifted curve runs from ``logsnr_max`` to
    ``logsnr_min`` and stays finite (simple diffusion's and VDM's reference code do the same).
    With infinite limits ``θ = πt/2`` exactly.

    The shift (Hoogeboom et al. 2023, Sec. 3.1) for a training resolution ``d``:

    - ``shift = 2 log(base/d)``: the cosine schedule that suits ``base × base`` images,
      carried to ``d × d`` (``SNR^{d/s} = s² SNR^{d}``);
    - interpolated: ``shift(t) = t · 2 log(base/d)``, i.e. ``t · logSNR_{shift to base}(t) +
      (1 - t) · logSNR_{shift to d}(t)``: unshifted at ``t = 0``, where fine detail is made,
      fully shifted at ``t = 1`` (lucidrains' ``logsnr_schedule_interpolated`` with
      ``noise_d_low = base``, ``noise_d_high = d``).

    Args:
        schedule: the base logSNR curve; only ``"cosine"`` for now.
        resolution: the training resolution ``d``; ``None`` means no shift.
        base_resolution: the resolution the unshifted schedule is meant for (64 in
            Hoogeboom et al.).
        shift_interpolate: interpolate the shift linearly in ``t`` (see above).
        logsnr_min, logsnr_max: the unshifted logSNR at ``t = 1`` and ``t = 0``.
    """

    def __init__(
        self,
        schedule: str = "cosine",
        resolution: int | None = None,
        base_resolution: int = 64,
        shift_interpolate: bool = False,
        logsnr_min: float = -15.0,
        logsnr_max: float = 15.0,
    ):
        if schedule not in SCHEDULES:
            raise UDPMError(f"unknown logSNR schedule {schedule!r}; choose from {SCHEDULES}")
        if resolution is not None and resolution < 1:
            raise UDPMError(f"resolution must be positive, got {resolution}")
        if base_resolution < 1:
            raise UDPMError(f"base_resolution must be positive, got {base_resolution}")
        if shift_interpolate and resolution is None:
            raise UDPMError("shift_interpolate needs a resolution to shift for")
        if not logsnr_min < logsnr_max:
            raise UDPMError(f"need logsnr_min < logsnr_max, got {logsnr_min}, {logsnr_max}")
        self.schedule = schedule
        self.resolution = resolution
        self.base_resolution = base_resolution
        self.shift_interpolate = shift_interpolate
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        self.theta_min = math.atan(math.exp(-0.5 * self.logsnr_max))
        self.theta_max = math.atan(math.exp(-0.5 * self.logsnr_min))

    @property
    def shift(self) -> float:
        """``2 log(base/d)``, the full logSNR shift (0 without a resolution)."""
        if self.resolution is None:
            return 0.0
        return 2 * math.log(self.base_resolution / self.resolution)

    def _time(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.numel() and not bool(torch.all((t >= 0) & (t <= 1))):
            raise UDPMError(f"continuous times must lie in [0, 1], got {t.min().item()}..")
        return t

    def logsnr(self, t) -> torch.Tensor:
        """``logSNR(t)`` in float64 for times ``t`` in [0, 1]; decreasing in ``t``."""
        t = self._time(t)
        theta = self.theta_min + t * (self.theta_max - self.theta_min)
        shift = t * self.shift if self.shift_interpolate else self.shift
        return -2 * torch.log(torch.tan(theta)) + shift

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``α_t = sqrt(sigmoid(logSNR))``, ``σ_t = sqrt(sigmoid(-logSNR))``, float64."""
        lam = self.logsnr(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    time_dtype = torch.float64

    def sample_times(self, n: int, generator=None) -> torch.Tensor:
        """Training times ``t ~ U[0, 1]``, float64 on the CPU."""
        return torch.rand(n, generator=generator, dtype=torch.float64)

    def grid(self, steps: int) -> list[float]:
        """``steps`` uniform times from ``t = 1`` towards the data."""
        from udpm.processes.grids import time_grid

        return time_grid(steps)

    def network_time(self, t) -> torch.Tensor:
        """The network's time input: ``t`` itself, float32."""
        return self._time(t).to(torch.float32)

    def posterior_mean_var(self, x_t: torch.Tensor, x0: torch.Tensor, t, s):
        """``q(z_s | z_t, x)`` for ``s < t``; ``(mean, var)``, var (N, 1, 1, 1), 0-d for one t."""
        return self._posterior(x_t, x0, t, s)

    def posterior_sample(self, x_t, x0, t, s, noise: torch.Tensor | None = None):
        """Draw from :meth:`posterior_mean_var`; deterministic given ``noise``."""
        return self._posterior_sample(x_t, x0, t, s, noise)

    def to_config(self) -> dict:
        """A plain dict that rebuilds this process with :func:`gaussian_process_from_config`."""
        return {
            "kind": "continuous",
            "schedule": self.schedule,
            "resolution": self.resolution,
            "base_resolution": self.base_resolution,
            "shift_interpolate": self.shift_interpolate,
            "logsnr_min": self.logsnr_min,
            "logsnr_max": self.logsnr_max,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "kind")
        return f"ContinuousGaussianProcess({args})"


GaussianProcess = DiscreteGaussianProcess | ContinuousGaussianProcess


def gaussian_process_from_config(config: dict) -> GaussianProcess:
    """Inverse of ``to_config`` for both Gaussian processes."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind == "continuous":
        return ContinuousGaussianProcess(**config)
    if kind != "discrete":
        raise UDPMError(f"unknown Gaussian process kind {kind!r}; expected discrete/continuous")
    schedule = config.pop("schedule", None)
    if schedule in ("linear", "scaled_linear", "cosine"):
        return getattr(DiscreteGaussianProcess, schedule)(**config)
    if schedule is None and "betas" in config:
        return DiscreteGaussianProcess(config["betas"])
    raise UDPMError(f"unknown discrete schedule {schedule!r}; expected linear, cosine or betas")


def _expand(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A float64 coefficient in ``x``'s dtype: (N,) times give (N, 1, .., 1), one time 0-d.

    This is the process contract's shape rule for the std and variance they return (the
    upsampling process, whose level is one integer, returns 0-d).
    """
    coef = coef.to(device=x.device, dtype=x.dtype)
    return coef if coef.ndim == 0 else coef.reshape(-1, *([1] * (x.ndim - 1)))
