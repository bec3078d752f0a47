"""Parameterisations (ε, x0, v) and the losses of DDPM and simple diffusion."""

import pytest
import torch
import torch.nn.functional as F

from udpm.errors import UDPMError
from udpm.objectives.denoiser import Denoiser
from udpm.objectives.gaussian import (
    ddpm_simple_loss,
    diffusion_loss,
    eps_from_v,
    eps_from_x0,
    multiscale_loss,
    multiscale_resolutions,
    predict_x0_eps,
    v_from_eps,
    v_from_eps_x0,
    v_from_x0,
    x0_from_eps,
    x0_from_v,
)
from udpm.processes.gaussian import ContinuousGaussianProcess, DiscreteGaussianProcess


def _alpha_sigma(n):
    angle = torch.rand(n, 1, 1, 1, dtype=torch.float64) * 1.5 + 0.03  # away from 0 and π/2
    return angle.cos(), angle.sin()


def test_conversions_round_trip():
    x0, eps = (
        torch.randn(5, 3, 4, 4, dtype=torch.float64),
        torch.randn(5, 3, 4, 4, dtype=torch.float64),
    )
    alpha, sigma = _alpha_sigma(5)
    x_t = alpha * x0 + sigma * eps
    v = v_from_eps_x0(eps, x0, alpha, sigma)
    torch.testing.assert_close(v, alpha * eps - sigma * x0)
    for got, want in [
        (x0_from_eps(x_t, eps, alpha, sigma), x0),
        (eps_from_x0(x_t, x0, alpha, sigma), eps),
        (x0_from_v(x_t, v, alpha, sigma), x0),
        (eps_from_v(x_t, v, alpha, sigma), eps),
        (v_from_eps(x_t, eps, alpha, sigma), v),
        (v_from_x0(x_t, x0, alpha, sigma), v),
    ]:
        torch.testing.assert_close(got, want)
    for name, output in [("eps", eps), ("x0", x0), ("v", v)]:
        x0_hat, eps_hat = predict_x0_eps(output, x_t, alpha, sigma, name)
        torch.testing.assert_close(x0_hat, x0) and torch.testing.assert_close(eps_hat, eps)
    with pytest.raises(UDPMError, match="unknown parameterization"):
        predict_x0_eps(eps, x_t, alpha, sigma, "score")


class Recorder(torch.nn.Module):
    """A tiny network that remembers its inputs."""

    def __init__(self, channels=2):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.calls = []

    def forward(self, x, t, class_labels=None):
        self.calls.append((x.detach().clone(), t.clone(), class_labels))
        return self.conv(x) + t.view(-1, 1, 1, 1)


def test_ddpm_simple_loss_is_algorithm_1():
    p = DiscreteGaussianProcess.linear()
    net = Recorder()
    x0, noise = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    labels = torch.tensor([1, 2, 3, 4])
    loss = ddpm_simple_loss(net, p, x0, labels, t=t, noise=noise)
    x_t, time, seen_labels = net.calls[0]
    ab = p.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    torch.testing.assert_close(time, (t + 0.5) / 1000)  # the network's time convention
    assert seen_labels is labels
    expected = ((noise - net(x_t, time)) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.abs().sum() > 0


def test_loss_is_zero_for_the_right_answer_and_reproducible():
    p = DiscreteGaussianProcess.cosine(T=100)
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([5, 50, 95])
    oracle = {  # networks that know the answer, one per parameterisation
        "eps": lambda x, time, c: noise,
        "x0": lambda x, time, c: x0,
        "v": lambda x, time, c: v_from_eps_x0(noise, x0, *_coef(p, t)),
    }
    for name, net in oracle.items():
        for weighting in ("eps", "x0", "v"):
            loss = diffusion_loss(Denoiser(net, name), p, x0, t=t, noise=noise, weighting=weighting)
            assert loss.item() < 1e-8, (name, weighting)
    net = Recorder(1)
    a = diffusion_loss(net, p, x0, generator=torch.Generator().manual_seed(3))
    b = diffusion_loss(net, p, x0, generator=torch.Generator().manual_seed(3))
    c = diffusion_loss(net, p, x0, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() != c.item()


def _coef(process, t):
    alpha, sigma = process.alpha_sigma(t)
    return alpha.float().view(-1, 1, 1, 1), sigma.float().view(-1, 1, 1, 1)


@pytest.mark.parametrize(
    "process, t",
    [
        (DiscreteGaussianProcess.linear(), torch.tensor([3, 300, 900])),
        (
            ContinuousGaussianProcess(resolution=128),
            torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64),
        ),
    ],
)
def test_weightings_follow_seed_004(process, t):
    """With a v-network: ``L_ε = α² L_v`` and ``L_x = σ² L_v`` per example."""
    net = Recorder()
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    alpha, sigma = _coef(process, t)
    losses = {
        w: diffusion_loss(Denoiser(net, "v"), process, x0, t=t, noise=noise, weighting=w)
        for w in ("eps", "x0", "v")
    }
    v_hat = net(process.q_sample(x0, t, noise), process.network_time(t))
    err_v = ((v_hat - v_from_eps_x0(noise, x0, alpha, sigma)) ** 2).mean(
        dim=(1, 2, 3), keepdim=True
    )
    torch.testing.assert_close(losses["v"], err_v.mean())
    torch.testing.assert_close(losses["eps"], (alpha**2 * err_v).mean())
    torch.testing.assert_close(losses["x0"], (sigma**2 * err_v).mean())
    assert isinstance(net.calls[0][1], torch.Tensor) and net.calls[0][1].dtype == torch.float32
    with pytest.raises(UDPMError, match="unknown weighting"):
        diffusion_loss(net, process, x0, t=t, noise=noise, weighting="snr")


def test_multiscale_single_scale_is_plain_loss():
    eps, eps_hat = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    plain = F.mse_loss(eps_hat, eps)
    torch.testing.assert_close(multiscale_loss(eps, eps_hat, base=32, normalize=True), plain)
    torch.testing.assert_close(multiscale_loss(eps, eps_hat, base=32), plain / 32)  # weight 1/s


def test_multiscale_sums_pooled_losses_with_weight_one_over_s():
    eps, eps_hat = torch.randn(2, 3, 128, 128), torch.randn(2, 3, 128, 128)
    expected = sum(
        F.mse_loss(F.avg_pool2d(eps_hat, 128 // s), F.avg_pool2d(eps, 128 // s)) / s
        for s in (32, 64, 128)
    )
    torch.testing.assert_close(multiscale_loss(eps, eps_hat, base=32), expected)
    assert multiscale_resolutions(128, 32) == [32, 64, 128]


def test_multiscale_sees_detail_only_at_full_resolution():
    """An error with zero mean in every 2×2 block vanishes at 32×32; coarse errors do not."""
    eps = torch.zeros(1, 1, 64, 64)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32).view(1, 1, 64, 64)
    assert multiscale_loss(eps, checker, base=32).item() == pytest.approx(1 / 64)
    flat = torch.ones(1, 1, 64, 64)
    assert multiscale_loss(eps, flat, base=32).item() == pytest.approx(1 / 32 + 1 / 64)


def test_diffusion_loss_with_multiscale():
    p = ContinuousGaussianProcess(resolution=64, shift_interpolate=True)
    net = Recorder(1)
    x0, noise = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    loss = diffusion_loss(Denoiser(net, "v"), p, x0, t=t, noise=noise, multiscale_base=32)
    alpha, sigma = _coef(p, t)
    x_t = p.q_sample(x0, t, noise)
    _, eps_hat = predict_x0_eps(net(x_t, p.network_time(t)), x_t, alpha, sigma, "v")
    torch.testing.assert_close(loss, multiscale_loss(noise, eps_hat, base=32))


def test_multiscale_errors():
    with pytest.raises(UDPMError, match="not base 32 times a power of 2"):
        multiscale_resolutions(96, 32)
    with pytest.raises(UDPMError, match="square"):
        multiscale_loss(torch.zeros(1, 1, 32, 64), torch.zeros(1, 1, 32, 64))
