"""DDGAN's mathematics: schedule, joint pairs, posterior sampler with an oracle G, D's terms.

References: Xiao et al. 2022 (DDGAN) and NVlabs/denoising-diffusion-gan ``train_ddgan.py``,
whose formulas are re-derived here independently of ``udpm.processes.schedules``.
"""

import math

import numpy as np
import pytest
import torch

from udpm.objectives.adversarial import discriminator_loss, lazy_r1_due
from udpm.objectives.ddgan import fake_prev, joint_pair, posterior_sample, real_logits_r1
from udpm.processes.schedules import ddgan_betas, ddgan_process
from udpm.samplers.ddgan import latent_shapes, sample_ddgan


def nvlabs_coefficients(T, beta_min=0.1, beta_max=20.0):
    """NVlabs' ``get_sigma_schedule`` and ``Posterior_Coefficients``, in NumPy float64."""
    t = np.arange(T + 1, dtype=np.float64) / T * (1 - 1e-3) + 1e-3
    log_mean_coeff = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
    alpha_bars = np.exp(2 * log_mean_coeff)  # 1 - var_func_vp(t)
    betas = 1 - alpha_bars[1:] / alpha_bars[:-1]
    alphas_cumprod = np.cumprod(1 - betas)
    prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    return {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "coef_x0": betas * np.sqrt(prev) / (1 - alphas_cumprod),
        "coef_xt": (1 - prev) * np.sqrt(1 - betas) / (1 - alphas_cumprod),
        "variance": betas * (1 - prev) / (1 - alphas_cumprod),
    }


def posterior_coefficients(process, t):
    """Read ``q(x_{t-1} | x_t, x_0)``'s coefficients off the code under test, at index ``t``."""
    one, zero = torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, 1, 1, 1).double()
    index = torch.tensor([t])
    coef_x0 = posterior_sample(process, zero, one, index, noise=zero).item()
    coef_xt = posterior_sample(process, one, zero, index, noise=zero).item()
    std = posterior_sample(process, zero, zero, index, noise=one).item()
    return coef_x0, coef_xt, std**2


# --- schedule and posterior --------------------------------------------------------------


@pytest.mark.parametrize("T", [2, 4])
def test_schedule_and_posterior_equal_nvlabs(T):
    ref = nvlabs_coefficients(T)
    process = ddgan_process(T)
    assert process.betas.dtype == torch.float64 and process.num_timesteps == T
    np.testing.assert_allclose(process.betas.numpy(), ref["betas"], rtol=1e-12)
    np.testing.assert_allclose(process.alphas_cumprod.numpy(), ref["alphas_cumprod"], rtol=1e-12)
    for t in range(T):
        coef_x0, coef_xt, var = posterior_coefficients(process, t)
        assert coef_x0 == pytest.approx(ref["coef_x0"][t], rel=1e-10)
        assert coef_xt == pytest.approx(ref["coef_xt"][t], rel=1e-10, abs=1e-14)
        assert var == pytest.approx(ref["variance"][t], rel=1e-10, abs=1e-14)


def test_prior_mismatch_is_small_but_not_zero():
    alpha_bar_T = ddgan_process(4).alphas_cumprod[-1].item()
    assert 1e-5 < alpha_bar_T < 1e-4  # ≈ 4.3e-5: x_T is nearly, not exactly, N(0, I)
    assert ddgan_betas(4).dtype == torch.float64


@pytest.mark.parametrize("T", [2, 4])
def test_posterior_is_dense_bayes(T):
    """Condition the joint Gaussian of ``(x_{t-1}, x_t)`` given ``x_0`` by the Schur complement."""
    process = ddgan_process(T)
    for t in range(1, T):
        a_prev = process.alphas_cumprod[t - 1].item()
        beta = process.betas[t].item()
        a = math.sqrt(1 - beta)
        m = torch.tensor([math.sqrt(a_prev), a * math.sqrt(a_prev)], dtype=torch.float64)
        v = 1 - a_prev
        cov = torch.tensor([[v, a * v], [a * v, a * a * v + beta]], dtype=torch.float64)
        # x_{t-1} | x_t = m_0 + C_01 C_11^{-1} (x_t - m_1),  Var = C_00 - C_01 C_11^{-1} C_10
        gain = torch.linalg.solve(cov[1:, 1:], cov[1:, :1]).item()
        cond_var = (cov[:1, :1] - cov[:1, 1:] @ torch.linalg.solve(cov[1:, 1:], cov[1:, :1])).item()
        coef_x0, coef_xt, var = posterior_coefficients(process, t)
        assert coef_xt == pytest.approx(gain, rel=1e-10)
        assert coef_x0 == pytest.approx((m[0] - gain * m[1]).item(), rel=1e-10)  # per unit x_0
        assert var == pytest.approx(cond_var, rel=1e-10)


# --- joint training pairs ----------------------------------------------------------------


def test_pairs_are_joint():
    """For fixed ``x_0``: Cov(x_{t-1}, x_t) = sqrt(1-β_t) Var(x_{t-1}), and the marginals hold."""
    process, n = ddgan_process(4), 40_000
    gen = torch.Generator().manual_seed(1)
    x0 = torch.full((n, 1, 1, 1), 0.6, dtype=torch.float64)
    for t in range(4):
        index = torch.full((n,), t)
        noises = [torch.randn(n, 1, 1, 1, generator=gen, dtype=torch.float64) for _ in range(2)]
        x_prev, x_t = (v.flatten() for v in joint_pair(process, x0, index, *noises))
        cov = ((x_prev - x_prev.mean()) * (x_t - x_t.mean())).mean().item()
        var_prev = x_prev.var().item()
        expect_var = 1 - (process.alphas_cumprod[t - 1].item() if t else 1.0)
        assert var_prev == pytest.approx(expect_var, rel=0.03, abs=1e-12)
        assert cov == pytest.approx(math.sqrt(1 - process.betas[t].item()) * var_prev, abs=0.01)
        alpha_bar = process.alphas_cumprod[t].item()
        assert x_t.mean().item() == pytest.approx(0.6 * math.sqrt(alpha_bar), abs=0.015)
        assert x_t.var().item() == pytest.approx(1 - alpha_bar, rel=0.03)
        if t:  # independent marginals would give Cov = 0: ours is many standard errors off
            assert cov > 10 * math.sqrt(var_prev * x_t.var().item() / n)


def test_fake_is_differentiable_in_x0_hat():
    process = ddgan_process(4)
    x0_hat = torch.zeros(2, 3, 4, 4, requires_grad=True)
    x_t, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    fake_prev(process, x_t, x0_hat, torch.tensor([0, 3]), noise).sum().backward()
    assert x0_hat.grad.abs().min() > 0
    # At t = 0 the fake is x̂_0 itself: gradient one, no noise.
    torch.testing.assert_close(x0_hat.grad[0], torch.ones(3, 4, 4))


# --- the oracle generator ----------------------------------------------------------------

MU = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
_L = torch.tensor([[0.6, 0.0, 0.0], [0.3, 0.5, 0.0], [-0.2, 0.1, 0.55]], dtype=torch.float64)
SIGMA = _L @ _L.T


class Oracle:
    """``G*(x_t, z, t) = E[x_0 | x_t] + chol(Cov[x_0 | x_t]) z`` for data ``N(μ, Σ)``.

    With ``use_z=False`` it returns the posterior mean alone: a generator that ignores ``z``.
    """

    def __init__(self, process, use_z=True):
        self.process, self.use_z = process, use_z

    def __call__(self, x, time, class_labels=None, z=None):
        T = self.process.num_timesteps
        t = int(round(time[0].item() * T - 0.5))  # network_time's inverse
        ab = self.process.alphas_cumprod[t].item()
        a, s2 = math.sqrt(ab), 1 - ab
        cov_xt = a * a * SIGMA + s2 * torch.eye(3, dtype=torch.float64)
        gain = a * torch.linalg.solve(cov_xt, SIGMA).T  # Σ a (a²Σ + s² I)^{-1}
        post_cov = SIGMA - a * gain @ SIGMA
        xt = x.flatten(1).double()
        mean = MU + (xt - a * MU) @ gain.T
        if self.use_z:
            mean = mean + z.double() @ torch.linalg.cholesky(post_cov).T
        return mean.float().view_as(x)


def oracle_samples(T, use_z, n=20_000):
    process = ddgan_process(T)
    shapes = latent_shapes((3, 1, 1), T, z_dim=3)
    gen = torch.Generator().manual_seed(T)
    noises = [torch.randn(n, *shape, generator=gen) for shape in shapes]
    x = sample_ddgan(Oracle(process, use_z), process, (3, 1, 1), noises=noises, z_dim=3)
    return x.flatten(1).double()


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_oracle_generator_reproduces_the_data(T):
    x = oracle_samples(T, use_z=True)
    torch.testing.assert_close(x.mean(0), MU, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), SIGMA, atol=0.02, rtol=0)


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_generator_ignoring_z_loses_variance(T):
    """Without ``z``, each step's ``x̂_0`` is a posterior mean: the spread is far too small."""
    x = oracle_samples(T, use_z=False)
    assert torch.cov(x.T).trace() < 0.75 * SIGMA.trace()


def test_latent_order_and_count():
    shapes = latent_shapes((3, 8, 8), 4, z_dim=100)
    image, z = (3, 8, 8), (100,)
    assert shapes == [image, z, image, z, image, z, image, z]  # x_T, (z_t, ε_t)..., z_1
    assert latent_shapes((3, 8, 8), 4, z_dim=0) == [image] * 4


def test_sampler_is_deterministic_and_batch_independent():
    process = ddgan_process(2)
    oracle = Oracle(process)
    one = sample_ddgan(oracle, process, (3, 1, 1), n=5, seed=10, z_dim=3)
    again = sample_ddgan(oracle, process, (3, 1, 1), n=5, seed=10, z_dim=3)
    part = sample_ddgan(oracle, process, (3, 1, 1), n=2, seed=13, z_dim=3)
    torch.testing.assert_close(one, again, rtol=0, atol=0)
    torch.testing.assert_close(one[3:], part)


def test_sampler_counts_steps_and_rejects_a_short_latent():
    from udpm.errors import UDPMError

    process, calls = ddgan_process(4), []
    noises = [torch.randn(2, *s) for s in latent_shapes((3, 1, 1), 4, z_dim=3)]
    sample_ddgan(
        Oracle(process),
        process,
        (3, 1, 1),
        noises=noises,
        z_dim=3,
        callback=lambda k, total: calls.append((k, total)),
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # NFE = T
    with pytest.raises(UDPMError, match="noise maps"):
        sample_ddgan(Oracle(process), process, (3, 1, 1), noises=noises[:-1], z_dim=3)


# --- the discriminator's terms -----------------------------------------------------------


def test_discriminator_loss_is_two_ln2_at_zero_logits():
    zeros = torch.zeros(7)
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2), rel=1e-6)


class LinearPairD(torch.nn.Module):
    """``D(x) = <w, x>`` on D's (N, 2C, H, W) input: ∇ w.r.t. x_{t-1} is ``w[:C]``."""

    def __init__(self, channels=2, size=4):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(2 * channels, size, size))

    def forward(self, x, time, class_labels=None):
        return (x * self.w).flatten(1).sum(1)


def test_r1_is_taken_on_the_real_prev_alone():
    D = LinearPairD()
    x_prev, x_t = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    logits, penalty = real_logits_r1(D, x_prev, x_t, torch.zeros(3), None, with_r1=True)
    expect = D.w[:2].pow(2).sum()
    torch.testing.assert_close(penalty, expect)
    assert penalty.item() < D.w.pow(2).sum().item() - 1  # x_t's half is not penalised
    penalty.backward()  # the penalty reaches D's weights (double backward)
    torch.testing.assert_close(D.w.grad[:2], 2 * D.w.detach()[:2])
    torch.testing.assert_close(D.w.grad[2:], torch.zeros(2, 4, 4))
    _, none = real_logits_r1(D, x_prev, x_t, torch.zeros(3), None, with_r1=False)
    assert none is None


def test_lazy_r1_fires_every_k_steps_from_zero():
    assert [s for s in range(40) if lazy_r1_due(s, 15)] == [0, 15, 30]
    assert all(lazy_r1_due(s, 1) for s in range(5))
