"""The upsampling process against dense-matrix computations on tiny images."""

import math

import pytest
import torch

from udpm.operators import Downsample
from udpm.processes import PAPER_ALPHAS, PAPER_SIGMAS, UpsamplingProcess, process_from_config

ODD_KERNEL = torch.tensor([[0.9, 0.3], [0.4, 0.7]], dtype=torch.float64)  # ||w|| != 1


def dense(linear_map, in_shape):
    """The matrix of a linear map on tensors of shape in_shape (batch of one)."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    return linear_map(basis).reshape(n, -1).T


def process(kernel=None, **kw):
    return UpsamplingProcess(PAPER_ALPHAS, PAPER_SIGMAS, Downsample(2, kernel), **kw)


def test_paper_marginal_variances():
    p = process()
    assert p.marginal_var[1:] == pytest.approx([0.01, 0.0404, 0.09], rel=1e-3)


@pytest.mark.parametrize("kernel", [None, ODD_KERNEL])
def test_marginal_equals_chained_steps_exactly(kernel):
    """x_l = A x_0 + Σ_k B_k e_k: compare A x_0 with the mean and Σ B_k B_kᵀ with s_l² I."""
    p = process(kernel)
    x0 = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    for l in range(1, p.levels + 1):
        chained = x0
        for k in range(1, l + 1):
            chained = p.q_step(chained, k, noise=torch.zeros_like(p.operator(chained)))
        mean, std = p.marginal(x0, l)
        torch.testing.assert_close(chained, mean)
        cov = torch.zeros(1, dtype=torch.float64)
        for k in range(1, l + 1):
            # B_k = (ᾱ_l/ᾱ_k) σ_k H^{l-k}, acting on e_k of level k's size
            size = 8 // 2**k

            def b_k(e, k=k, l=l):
                return p.alpha_bar[l] / p.alpha_bar[k] * p.sigmas[k - 1] * p.degrade(e, l - k)

            b = dense(b_k, (1, size, size))
            cov = cov + b @ b.T
        eye = torch.eye(cov.shape[0], dtype=torch.float64)
        torch.testing.assert_close(cov, std**2 * eye)


def test_marginal_monte_carlo_with_non_unit_kernel():
    # Large alphas make the ||w||² factor matter (with the paper's it is below 1%).
    p = UpsamplingProcess((0.9, 0.8, 0.7), (0.3, 0.2, 0.3), Downsample(2, ODD_KERNEL))
    x0 = torch.rand(1, 1, 8, 8, dtype=torch.float64).expand(20000, 1, 8, 8)
    x = x0
    for l in range(1, 4):
        x = p.q_step(x, l)
        mean, std = p.marginal(x0[:1], l)
        torch.testing.assert_close(x.mean(0, keepdim=True), mean, atol=0.02, rtol=0.0)
        assert x.var(0).mean().item() == pytest.approx(std.item() ** 2, rel=0.03)
    # The authors' marginal without ||w||² would be wrong here by a visible margin.
    no_w = p.alpha_bar[3] ** 2 * sum(s**2 / ab**2 for s, ab in zip(p.sigmas, p.alpha_bar[1:]))
    assert abs(no_w - p.marginal_var[3]) / p.marginal_var[3] > 0.05


def dense_posterior(p, l, size):
    """Σ and μ's two coefficient matrices by explicit inversion (level l-1 of side size)."""
    m = dense(p.operator, (1, size, size))
    a = p.alphas[l - 1] ** 2 / p.sigmas[l - 1] ** 2
    b = 1 / p.marginal_var[l - 1]
    sigma = torch.linalg.inv(a * m.T @ m + b * torch.eye(m.shape[1], dtype=torch.float64))
    return sigma, m, b


@pytest.mark.parametrize("kernel", [None, ODD_KERNEL])
@pytest.mark.parametrize("l", [2, 3])
def test_posterior_mean_and_cov_equal_dense_computation(kernel, l):
    p = process(kernel)
    size = 4
    sigma, m, b = dense_posterior(p, l, size)
    cov = dense(lambda v: p.posterior_cov(v, l), (1, size, size))
    torch.testing.assert_close(cov, sigma)
    x_l = torch.randn(1, 1, size // 2, size // 2, dtype=torch.float64)
    h = torch.randn(1, 1, size, size, dtype=torch.float64)
    alpha, s = p.alphas[l - 1], p.sigmas[l - 1]
    mu = sigma @ (alpha / s**2 * m.T @ x_l.flatten() + b * p.alpha_bar[l - 1] * h.flatten())
    torch.testing.assert_close(p.posterior_mean(x_l, h, l).flatten(), mu)


@pytest.mark.parametrize("kernel", [None, ODD_KERNEL])
def test_exact_draw_has_covariance_sigma(kernel):
    p = process(kernel)
    l, size = 2, 4
    sigma, _, _ = dense_posterior(p, l, size)
    zero_x, zero_h = torch.zeros(1, 1, 2, 2, dtype=torch.float64), None
    zero_h = torch.zeros(1, 1, size, size, dtype=torch.float64)
    # The draw is μ + S z; with x_l = h = 0 it is S z, so S Sᵀ must equal Σ exactly.
    s = dense(
        lambda z: p.posterior_sample(
            zero_x.expand(len(z), -1, -1, -1), zero_h.expand(len(z), -1, -1, -1), l, noise=z
        ),
        (1, size, size),
    )
    torch.testing.assert_close(s @ s.T, sigma)
    # And by Monte Carlo, with the mean included.
    x_l = torch.randn(1, 1, 2, 2, dtype=torch.float64).expand(40000, -1, -1, -1)
    h = torch.randn(1, 1, size, size, dtype=torch.float64).expand(40000, -1, -1, -1)
    draws = p.posterior_sample(x_l, h, l).reshape(40000, -1)
    emp = torch.cov(draws.T)
    assert (emp - sigma).abs().max().item() < 0.05 * sigma.diagonal().max().item()
    torch.testing.assert_close(
        draws.mean(0),
        p.posterior_mean(x_l[:1], h[:1], l).flatten(),
        atol=4 * sigma.diagonal().max().sqrt().item() / 200,
        rtol=0,
    )


def test_level_one_is_a_point_mass():
    p = process()
    x1, h = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)
    assert torch.equal(p.posterior_sample(x1, h, 1), h)
    assert torch.equal(p.posterior_mean(x1, h, 1), h)
    assert torch.count_nonzero(p.posterior_cov(h, 1)) == 0


def test_scalar_approximation_differs_where_the_schedule_says():
    """The scalar Σ = 1/(a+b) I is exact on range(Hᵀ) and off by a/b on its complement."""
    exact, scalar = process(), process(scalar_posterior=True)
    coarse = exact.operator.adjoint(torch.randn(1, 3, 4, 4, dtype=torch.float64))
    v = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    detail = v - exact.operator.project(v)
    for l in (2, 3):
        torch.testing.assert_close(exact.posterior_cov(coarse, l), scalar.posterior_cov(coarse, l))
        a = exact.alphas[l - 1] ** 2 / exact.sigmas[l - 1] ** 2
        b = 1 / exact.marginal_var[l - 1]
        ratio = exact.posterior_cov(detail, l).norm() / scalar.posterior_cov(detail, l).norm()
        assert ratio.item() - 1 == pytest.approx(a / b, rel=1e-6)
    # With the paper's schedules: about 1% at l = 2 and negligible (< 1e-6) at l = 3.
    a2 = (0.2 / 0.2) ** 2 * exact.marginal_var[1]
    assert a2 == pytest.approx(0.01, rel=1e-6)
    x_l, h = (
        torch.randn(1, 3, 4, 4, dtype=torch.float64),
        torch.randn(1, 3, 8, 8, dtype=torch.float64),
    )
    diff = exact.posterior_mean(x_l, h, 2) - scalar.posterior_mean(x_l, h, 2)
    torch.testing.assert_close(exact.operator.project(diff), torch.zeros_like(diff))
    assert diff.abs().max() > 1e-4


def test_config_round_trip():
    p = process(ODD_KERNEL, scalar_posterior=True)
    q = process_from_config(p.to_config())
    assert q.to_config() == p.to_config()
    assert q.marginal_var == pytest.approx(p.marginal_var)


@pytest.mark.parametrize(
    "alphas, sigmas, message",
    [
        ((0.5, 0.2), (0.1, 0.2, 0.3), "same length, got 2 and 3"),
        ((0.5, 0.2, 0.1), (0.1, 0.0, 0.3), "sigmas must all be positive"),
        ((0.5, 0.2, 0.1), (0.1, -1, 0.3), "sigmas must all be positive"),
        ((), (), "at least one level"),
    ],
)
def test_schedule_errors(alphas, sigmas, message):
    with pytest.raises(ValueError, match=message):
        UpsamplingProcess(alphas, sigmas)


def test_shape_errors():
    p = process()
    with pytest.raises(ValueError, match=r"image size 12 is not divisible by 2\^3 = 8"):
        p.q_sample(torch.zeros(1, 3, 12, 12), 3)
    with pytest.raises(ValueError, match="noise has shape"):
        p.q_sample(torch.zeros(1, 3, 8, 8), 1, noise=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="noise has shape"):
        p.posterior_sample(
            torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 8, 8), 2, noise=torch.zeros(1, 3, 4, 4)
        )
    with pytest.raises(ValueError, match="h .* has shape"):
        p.posterior_mean(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), 2)
    with pytest.raises(ValueError, match="level must be in 1..3"):
        p.posterior_mean(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 8, 8), 4)
