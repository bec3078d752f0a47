"""Gaussian processes: schedules, marginals against chained steps, posteriors against Bayes."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from udpm.errors import UDPMError
from udpm.processes.gaussian import (
    ContinuousGaussianProcess,
    DiscreteGaussianProcess,
    gaussian_process_from_config,
)

# --- schedules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (DiscreteGaussianProcess.linear, {"beta_schedule": "linear"}),
        (DiscreteGaussianProcess.cosine, {"beta_schedule": "squaredcos_cap_v2"}),
    ],
)
def test_schedules_match_diffusers(ours, theirs):
    p = ours()
    ref = DDPMScheduler(num_train_timesteps=1000, **theirs)
    assert p.num_timesteps == 1000
    torch.testing.assert_close(p.betas.float(), ref.betas, rtol=1e-6, atol=0)
    # diffusers accumulates ᾱ in float32; ours is float64.
    torch.testing.assert_close(p.alphas_cumprod, ref.alphas_cumprod.double(), rtol=1e-5, atol=1e-9)


def test_linear_schedule_is_ddpm():
    p = DiscreteGaussianProcess.linear()
    assert p.betas[0].item() == pytest.approx(1e-4) and p.betas[-1].item() == pytest.approx(0.02)
    assert p.betas.dtype == p.alphas_cumprod.dtype == torch.float64
    assert p.alpha_bar(-1).item() == 1.0
    assert p.alpha_bar(999).item() == pytest.approx(4.04e-5, rel=1e-2)  # ᾱ_T ≈ 0: x_T ≈ N(0, I)


def test_network_time_is_midpoint():
    p = DiscreteGaussianProcess.linear(T=10)
    torch.testing.assert_close(p.network_time(torch.tensor([0, 9])), torch.tensor([0.05, 0.95]))


# --- marginal ----------------------------------------------------------------------------


def test_marginal_equals_chained_steps():
    """Chain ``q_step`` from ``x_0``: the mean is ``sqrt(ᾱ_t) x_0`` and, by linearity in the
    step noises, the variance is the sum of their squared coefficients, ``1 - ᾱ_t``."""
    p = DiscreteGaussianProcess.linear(T=40, beta_start=1e-3, beta_end=0.2)
    x0 = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    t_end = 29
    mean_chain = x0
    for t in range(t_end + 1):
        mean_chain = p.q_step(mean_chain, torch.tensor([t]), torch.zeros_like(x0))
    variance = 0.0
    for k in range(t_end + 1):  # unit noise at step k only, zero data
        x = torch.zeros_like(x0)
        for t in range(t_end + 1):
            x = p.q_step(x, torch.tensor([t]), torch.ones_like(x0) * (t == k))
        variance += x.flatten()[0].item() ** 2
    mean, std = p.marginal(x0, torch.tensor([t_end]))
    torch.testing.assert_close(mean, mean_chain)
    assert std.item() ** 2 == pytest.approx(variance, rel=1e-12)
    assert variance == pytest.approx(1 - p.alphas_cumprod[t_end].item(), rel=1e-12)


@pytest.mark.parametrize(
    "process, t",
    [
        (DiscreteGaussianProcess.linear(), torch.tensor([0, 500, 999])),
        (ContinuousGaussianProcess(resolution=128), torch.tensor([0.0, 0.5, 1.0])),
    ],
)
def test_q_sample_is_deterministic_given_noise(process, t):
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    alpha, sigma = process.alpha_sigma(t)
    expected = alpha.float().view(-1, 1, 1, 1) * x0 + sigma.float().view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(process.q_sample(x0, t, noise), expected)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(3, dtype=torch.float64))


# --- posterior ---------------------------------------------------------------------------


def _dense_posterior(alpha_s, sigma_s, alpha_ts, sigma_ts, x0, x_t):
    """``q(x_s | x_t, x_0)`` by conditioning the dense joint Gaussian of ``(x_s, x_t)``.

    ``x_s = α_s x_0 + σ_s e_1`` and ``x_t = α_{t|s} x_s + σ_{t|s} e_2``: a linear map ``A`` of
    ``(e_1, e_2)``, so the joint covariance is ``A Aᵀ`` (d = number of pixels).
    """
    d = x0.numel()
    eye, zero = torch.eye(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    A = torch.cat(
        [
            torch.cat([sigma_s * eye, zero], 1),
            torch.cat([alpha_ts * sigma_s * eye, sigma_ts * eye], 1),
        ]
    )
    cov = A @ A.T
    mu_s = alpha_s * x0.flatten()
    mu_t = alpha_ts * mu_s
    gain = cov[:d, d:] @ torch.linalg.inv(cov[d:, d:])
    mean = mu_s + gain @ (x_t.flatten() - mu_t)
    var = cov[:d, :d] - gain @ cov[d:, :d]
    return mean.reshape(x0.shape), var


def _check_posterior(mean, var, dense_mean, dense_var):
    torch.testing.assert_close(mean, dense_mean, rtol=1e-9, atol=1e-12)
    d = dense_var.shape[0]
    torch.testing.assert_close(
        var.item() * torch.eye(d, dtype=torch.float64), dense_var, atol=1e-12, rtol=1e-9
    )


@pytest.mark.parametrize("t, s", [(1, 0), (500, 499), (999, 998), (700, 300), (0, -1), (600, -1)])
def test_discrete_posterior_matches_dense_bayes(t, s):
    p = DiscreteGaussianProcess.linear()
    x0, x_t = (
        torch.randn(1, 1, 2, 2, dtype=torch.float64),
        torch.randn(1, 1, 2, 2, dtype=torch.float64),
    )
    # The step s -> t by chaining single steps: ᾱ_{t|s} = ∏ α_k, σ_{t|s}² = 1 - ∏ α_k.
    alpha_ts = math.sqrt((1 - p.betas)[s + 1 : t + 1].prod().item())
    alpha_s = math.sqrt(p.alpha_bar(s).item())
    dense = _dense_posterior(
        alpha_s, math.sqrt(1 - alpha_s**2), alpha_ts, math.sqrt(1 - alpha_ts**2), x0, x_t
    )
    mean, var = p.posterior_mean_var(x_t, x0, torch.tensor([t]), torch.tensor([s]))
    _check_posterior(mean, var, *dense)


def test_discrete_posterior_is_ddpm_formula():
    """Ho et al. 2020, eq. 7: ``β̃_t`` and the two mean coefficients, s = t - 1."""
    p = DiscreteGaussianProcess.cosine()
    t = torch.tensor([3, 250, 998])
    x0, x_t = (
        torch.randn(3, 2, 4, 4, dtype=torch.float64),
        torch.randn(3, 2, 4, 4, dtype=torch.float64),
    )
    ab, ab_prev, beta = p.alphas_cumprod[t], p.alphas_cumprod[t - 1], p.betas[t]
    c0 = (ab_prev.sqrt() * beta / (1 - ab)).view(-1, 1, 1, 1)
    ct = ((1 - p.betas)[t].sqrt() * (1 - ab_prev) / (1 - ab)).view(-1, 1, 1, 1)
    mean, var = p.posterior_mean_var(x_t, x0, t)
    torch.testing.assert_close(mean, c0 * x0 + ct * x_t)
    torch.testing.assert_close(var.flatten(), (1 - ab_prev) / (1 - ab) * beta)
    # At t = 0 the posterior is the data itself.
    mean, var = p.posterior_mean_var(x_t, x0, torch.tensor([0, 0, 0]))
    torch.testing.assert_close(mean, x0) and torch.testing.assert_close(var, torch.zeros_like(var))


@pytest.mark.parametrize("t, s", [(0.9, 0.8), (1.0, 0.0), (0.5, 0.499), (0.3, 0.01)])
@pytest.mark.parametrize("interpolate", [False, True])
def test_continuous_posterior_matches_dense_bayes(t, s, interpolate):
    p = ContinuousGaussianProcess(resolution=256, shift_interpolate=interpolate)
    x0, x_t = (
        torch.randn(1, 1, 2, 2, dtype=torch.float64),
        torch.randn(1, 1, 2, 2, dtype=torch.float64),
    )
    (alpha_t,), (sigma_t,) = (v.tolist() for v in p.alpha_sigma(torch.tensor([t])))
    (alpha_s,), (sigma_s,) = (v.tolist() for v in p.alpha_sigma(torch.tensor([s])))
    alpha_ts = alpha_t / alpha_s  # VDM/simple diffusion: α_{t|s} = α_t/α_s, σ_{t|s}² below
    sigma_ts = math.sqrt(sigma_t**2 - alpha_ts**2 * sigma_s**2)
    dense = _dense_posterior(alpha_s, sigma_s, alpha_ts, sigma_ts, x0, x_t)
    mean, var = p.posterior_mean_var(x_t, x0, torch.tensor([t]), torch.tensor([s]))
    _check_posterior(mean, var, *dense)


def test_posterior_sample_uses_its_noise():
    p = DiscreteGaussianProcess.linear()
    x0, x_t, z = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t, s = torch.tensor([400, 10]), torch.tensor([300, 9])
    mean, var = p.posterior_mean_var(x_t, x0, t, s)
    torch.testing.assert_close(p.posterior_sample(x_t, x0, t, s, noise=z), mean + var.sqrt() * z)
    c = ContinuousGaussianProcess()
    mean, var = c.posterior_mean_var(x_t, x0, 0.7, 0.2)
    torch.testing.assert_close(
        c.posterior_sample(x_t, x0, 0.7, 0.2, noise=z), mean + var.sqrt() * z
    )


# --- logSNR --------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [32, 128, 256, 512])
def test_shifted_schedule_is_base_plus_shift(d):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    base = ContinuousGaussianProcess()
    shifted = ContinuousGaussianProcess(resolution=d)
    torch.testing.assert_close(
        shifted.logsnr(t) - base.logsnr(t), torch.full_like(t, 2 * math.log(64 / d))
    )
    assert ContinuousGaussianProcess(resolution=64).logsnr(t).equal(base.logsnr(t))


def test_cosine_logsnr_formula_and_limits():
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    exact = ContinuousGaussianProcess(resolution=256, logsnr_min=-math.inf, logsnr_max=math.inf)
    expected = -2 * torch.log(torch.tan(math.pi * t / 2)) + 2 * math.log(64 / 256)
    torch.testing.assert_close(exact.logsnr(t), expected, rtol=1e-12, atol=1e-12)
    clipped = ContinuousGaussianProcess()  # finite at both ends, close to the formula inside
    ends = clipped.logsnr(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(ends, torch.tensor([15.0, -15.0], dtype=torch.float64))
    inner = torch.linspace(0.1, 0.9, 81, dtype=torch.float64)
    assert (clipped.logsnr(inner) - exact.logsnr(inner) - 2 * math.log(4)).abs().max() < 1e-2
    lam = clipped.logsnr(torch.linspace(0, 1, 1001))
    assert bool(torch.all(lam[1:] < lam[:-1]))
    alpha, sigma = clipped.alpha_sigma(t)
    torch.testing.assert_close(alpha**2, torch.sigmoid(clipped.logsnr(t)))
    torch.testing.assert_close(sigma**2, torch.sigmoid(-clipped.logsnr(t)))


def test_interpolated_shift_is_linear_in_t():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    plain = ContinuousGaussianProcess()
    full = ContinuousGaussianProcess(resolution=512)
    interp = ContinuousGaussianProcess(resolution=512, shift_interpolate=True)
    # t·logSNR_{shift to base}(t) + (1-t)·logSNR_{shift to d}(t), the latter unshifted.
    torch.testing.assert_close(interp.logsnr(t), t * full.logsnr(t) + (1 - t) * plain.logsnr(t))
    assert interp.logsnr(0.0) == plain.logsnr(0.0) and interp.logsnr(1.0) == full.logsnr(1.0)


# --- config and errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "process",
    [
        DiscreteGaussianProcess.linear(T=100, beta_end=0.05),
        DiscreteGaussianProcess.cosine(T=50),
        DiscreteGaussianProcess([0.1, 0.2, 0.3]),
        ContinuousGaussianProcess(resolution=128, shift_interpolate=True, logsnr_max=10.0),
    ],
)
def test_config_round_trip(process):
    rebuilt = gaussian_process_from_config(process.to_config())
    assert type(rebuilt) is type(process) and rebuilt.to_config() == process.to_config()
    t = torch.tensor([0, 1, 2]) if isinstance(process, DiscreteGaussianProcess) else torch.rand(3)
    assert rebuilt.logsnr(t).equal(process.logsnr(t))


def test_errors():
    p = DiscreteGaussianProcess.linear(T=10)
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(UDPMError, match=r"indices must lie in 0..9"):
        p.marginal(x, torch.tensor([10]))
    with pytest.raises(UDPMError, match="integer indices"):
        p.marginal(x, torch.tensor([0.5]))
    with pytest.raises(UDPMError, match="t_prev must be smaller"):
        p.posterior_mean_var(x, x, torch.tensor([3]), torch.tensor([5]))
    with pytest.raises(UDPMError, match="noise has shape"):
        p.q_sample(x, torch.tensor([1]), torch.zeros(1, 1, 4, 4))
    with pytest.raises(UDPMError, match=r"betas must all lie in \(0, 1\)"):
        DiscreteGaussianProcess([0.1, 1.0])
    c = ContinuousGaussianProcess()
    with pytest.raises(UDPMError, match=r"must lie in \[0, 1\]"):
        c.logsnr(torch.tensor([1.5]))
    with pytest.raises(UDPMError, match="s earlier"):
        c.posterior_mean_var(x, x, 0.2, 0.7)
    with pytest.raises(UDPMError, match="shift_interpolate needs a resolution"):
        ContinuousGaussianProcess(shift_interpolate=True)
    with pytest.raises(UDPMError, match="unknown logSNR schedule"):
        ContinuousGaussianProcess(schedule="linear")
