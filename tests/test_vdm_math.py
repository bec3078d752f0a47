"""VDM's mathematics (Kingma et al. 2021) without training: schedule, bound, decoder, sampler."""

import math

import pytest
import torch

from udpm.networks.schedule import NoiseSchedule
from udpm.objectives.vdm import (
    ShapeVarianceGradient,
    bin_centres,
    decode,
    decoder_log_probs,
    diffusion_term,
    gamma_and_weight,
    to_bins,
    vdm_bound,
)
from udpm.processes.vdm import VDMProcess, alpha_sigma

GAMMA_0, GAMMA_1 = -13.3, 5.0
KINDS = ("fixed", "scalar", "monotone")


def randomised(kind="monotone", seed=0, features=64, scale=1.0):
    """A schedule whose shape network has random (not VDM's small) weights."""
    torch.manual_seed(seed)
    schedule = NoiseSchedule(kind, GAMMA_0, GAMMA_1, features).double()
    if schedule.shape_net is not None:
        for p in schedule.shape_net.parameters():
            torch.nn.init.normal_(p, std=scale)
    return schedule


# --- the schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_monotone_schedule_is_strictly_increasing_with_exact_end_points(seed):
    schedule = randomised(seed=seed, scale=3.0)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    gamma = schedule(grid).detach()
    assert bool(torch.all(gamma[1:] > gamma[:-1]))
    gamma_0, gamma_1 = (g.item() for g in schedule.ends())
    assert (gamma_0, gamma_1) == pytest.approx((GAMMA_0, GAMMA_1), abs=1e-6)  # float32 init
    assert (gamma[0].item(), gamma[-1].item()) == (gamma_0, gamma_1)  # exactly


def test_schedule_stays_monotone_after_steps_that_push_weights_negative():
    schedule = randomised(scale=0.5)
    opt = torch.optim.SGD(schedule.shape_net.parameters(), lr=5.0)
    grid = torch.linspace(0, 1, 5001, dtype=torch.float64)
    for _ in range(5):
        opt.zero_grad()
        # Every raw weight goes down by 5 per step, and the shape is pushed to fall at 0.3.
        falling = schedule(torch.tensor([0.3])) - schedule(torch.tensor([0.29]))
        (sum(p.sum() for p in schedule.shape_net.parameters()) + falling.sum()).backward()
        opt.step()
    assert max(p.max().item() for p in schedule.shape_net.parameters()) < -15
    gamma = schedule(grid).detach()
    assert bool(torch.all(gamma[1:] > gamma[:-1]))
    assert (gamma[0].item(), gamma[-1].item()) == tuple(g.item() for g in schedule.ends())


@pytest.mark.parametrize("kind", KINDS)
def test_autograd_slope_equals_finite_differences(kind):
    schedule = randomised(kind, scale=2.0)
    t = torch.linspace(0.01, 0.99, 37, dtype=torch.float64)
    _, slope = schedule.with_derivative(t)
    h = 1e-6
    numeric = (schedule(t + h) - schedule(t - h)) / (2 * h)
    torch.testing.assert_close(slope.detach(), numeric.detach(), rtol=1e-6, atol=1e-6)


def test_learned_end_points_get_the_bounds_gradient():
    schedule = NoiseSchedule("scalar", GAMMA_0, GAMMA_1)
    gamma_0, gamma_1 = schedule.ends()
    assert (gamma_0.item(), gamma_1.item()) == pytest.approx((GAMMA_0, GAMMA_1))
    (gamma_1 - gamma_0).backward()
    assert schedule.gap_raw.grad.item() > 0 and not list(NoiseSchedule("fixed").parameters())


# --- analytic Gaussian data ------------------------------------------------------------------


class OptimalGaussianDenoiser(torch.nn.Module):
    """``E[ε | z_t]`` for data ``x ~ N(0, s² I)``: ``σ z/(α² s² + σ²)``."""

    def __init__(self, process, variance):
        super().__init__()
        self.process, self.variance = process, variance

    def forward(self, z, time, labels=None):
        p = self.process
        gamma = p.gamma_min + time.double() * (p.gamma_max - p.gamma_min)
        alpha, sigma = (c.view(-1, 1, 1, 1) for c in alpha_sigma(gamma))
        return (sigma * z / (alpha**2 * self.variance + sigma**2)).float()


def closed_form(variance):
    """``½ log((1 + SNR_max s²)/(1 + SNR_min s²))`` per dimension (SNR = e^{-γ})."""
    return 0.5 * math.log((1 + math.exp(-GAMMA_0) * variance) / (1 + math.exp(-GAMMA_1) * variance))


def expected_loss(schedule, variance, T=0, n=20000):
    """``E_t[½ w(t) E‖ε - ε̂*‖²]`` per dimension with the exact optimal MSE ``α²s²/(α²s²+σ²)``.

    Continuous time: midpoint quadrature on ``n`` points; ``T`` steps: the exact sum.
    """
    if T:
        t = torch.arange(1, T + 1, dtype=torch.float64) / T
    else:
        t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    gamma, weight = (v.detach() for v in gamma_and_weight(schedule, t, T))
    alpha, sigma = alpha_sigma(gamma)
    mse = alpha**2 * variance / (alpha**2 * variance + sigma**2)
    return (0.5 * weight * mse).mean().item()


@pytest.mark.parametrize("variance", [0.04, 0.25, 1.0])
@pytest.mark.parametrize("kind", ["fixed", "monotone"])
def test_continuous_diffusion_loss_is_invariant_to_the_shape(kind, variance):
    schedule = randomised(kind, scale=2.0)  # a strongly non-linear shape, same end points
    assert expected_loss(schedule, variance) == pytest.approx(closed_form(variance), rel=1e-5)


@pytest.mark.parametrize("kind", ["fixed", "monotone"])
def test_discrete_bound_decreases_strictly_towards_the_continuous_one(kind):
    schedule, variance = randomised(kind, scale=1.0), 0.25
    losses = [expected_loss(schedule, variance, T=2**k) for k in range(1, 14)]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert losses[-1] > closed_form(variance)
    assert losses[-1] == pytest.approx(closed_form(variance), rel=2e-3)


def test_monte_carlo_diffusion_term_matches_the_closed_form():
    """The code path (z_t, network call, γ' weight) with the optimal denoiser, by Monte Carlo."""
    schedule, variance = randomised("monotone", scale=1.0), 0.25
    process = VDMProcess(schedule, GAMMA_0, GAMMA_1)
    gen = torch.Generator().manual_seed(0)
    n, shape = 4000, (1, 8, 8)
    x = math.sqrt(variance) * torch.randn((n, *shape), generator=gen)
    eps = torch.randn((n, *shape), generator=gen)
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # stratified: low variance
    loss = diffusion_term(OptimalGaussianDenoiser(process, variance), process, x, t, eps)
    per_dim = loss.detach() / x[0].numel()
    stderr = per_dim.std().item() / math.sqrt(n)
    assert abs(per_dim.mean().item() - closed_form(variance)) < 4 * stderr + 1e-3


def test_discrete_loss_converges_to_the_continuous_one_for_a_fixed_network():
    torch.manual_seed(1)
    net = SmallNet()
    process = VDMProcess(randomised("monotone", scale=1.0), GAMMA_0, GAMMA_1)
    x, eps = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 1, 4, 4)
    t = torch.tensor([0.123456, 0.5, 0.876543], dtype=torch.float64)
    continuous = diffusion_term(net, process, x, t, eps).detach()
    gaps = [
        (diffusion_term(net, process, x, t, eps, T=10**k).detach() - continuous).abs().max()
        for k in range(1, 6)
    ]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-3 * continuous.abs().max()


class SmallNet(torch.nn.Module):
    """A fixed, smooth stand-in ε-network that depends on z and the time."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, z, time, labels=None):
        return torch.tanh(self.conv(z) + time.view(-1, 1, 1, 1))


# --- the decoder and 8-bit data --------------------------------------------------------------


def test_decoder_probabilities_sum_to_one_and_decode_every_value():
    gamma_0 = torch.tensor(GAMMA_0, dtype=torch.float64)
    z = torch.randn(2, 3, 4, 4)
    probs = decoder_log_probs(z, gamma_0).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 4, 4))
    k = torch.arange(256).view(1, 1, 16, 16)
    x = bin_centres(k)
    alpha_0, _ = alpha_sigma(gamma_0)
    assert torch.equal(to_bins(decode(alpha_0 * x.double(), gamma_0)), k)


def test_loader_pixels_map_to_their_exact_8bit_values():
    from udpm.images import from_uint8, to_uint8

    k = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_bins(from_uint8(k)), k.long())  # the loader's u/127.5 - 1
    assert torch.equal(to_bins(bin_centres(k.long())), k.long())  # (2k + 1)/256 - 1
    assert torch.equal(to_uint8(bin_centres(k.long())), k)  # samples save as their value


class OptimalUniformDenoiser(torch.nn.Module):
    """``E[ε | z_t]`` for i.i.d. uniform 8-bit data: a 256-component Gaussian mixture."""

    def __init__(self, process):
        super().__init__()
        self.process = process

    def forward(self, z, time, labels=None):
        p = self.process
        gamma = p.gamma_min + time.double() * (p.gamma_max - p.gamma_min)
        alpha, sigma = (c.view(-1, 1, 1, 1, 1) for c in alpha_sigma(gamma))
        centres = bin_centres().double()
        logits = -((z.double()[..., None] - alpha * centres) ** 2) / (2 * sigma**2)
        x_hat = (logits.softmax(-1) * centres).sum(-1)
        return ((z.double() - alpha[..., 0] * x_hat) / sigma[..., 0]).float()


def bound_bpd(net, process, images, repeats=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = images.float() / 127.5 - 1
    values = []
    for _ in range(repeats):
        t = torch.rand(len(x), generator=gen, dtype=torch.float64)
        eps, eps_0 = torch.randn(x.shape, generator=gen), torch.randn(x.shape, generator=gen)
        values.append(vdm_bound(net, process, x, t, eps, eps_0).bpd.detach())
    values = torch.stack(values).mean(0)
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


@pytest.mark.parametrize("kind", KINDS)
def test_no_bound_below_the_entropy_of_uniform_bytes(kind):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 1, 8, 8), generator=gen, dtype=torch.uint8)
    process = VDMProcess(randomised(kind, scale=1.0), GAMMA_0, GAMMA_1)
    for net in (OptimalUniformDenoiser(process), SmallNet()):
        bpd, stderr = bound_bpd(net, process, images)
        assert bpd > 8 - 3 * stderr, (type(net).__name__, bpd, stderr)
    # The Bayes-optimal denoiser makes the bound tight: it is close to 8 bits, not just above.
    bpd, _ = bound_bpd(OptimalUniformDenoiser(process), process, images)
    assert bpd < 8.05


# --- training the schedule's shape on the variance -------------------------------------------


def test_shape_gradient_is_that_of_the_second_moment():
    torch.manual_seed(0)
    net = SmallNet()
    schedule = randomised("monotone", features=8, scale=1.0)
    process = VDMProcess(schedule, GAMMA_0, GAMMA_1)
    x, eps, eps_0 = torch.rand(6, 1, 4, 4) * 2 - 1, torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    t = torch.rand(6, dtype=torch.float64)
    shape_params = list(schedule.shape_net.parameters())
    others = [schedule.gamma_0_raw, schedule.gap_raw, *net.parameters()]

    def grads(loss, params):
        return torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)

    plain = vdm_bound(net, process, x, t, eps, eps_0).bpd
    want_shape = grads((plain**2).mean(), shape_params)
    want_others = grads(plain.mean(), others)
    variance = ShapeVarianceGradient()
    hooked = vdm_bound(net, process, x, t, eps, eps_0, shape_variance=variance).bpd
    variance.set_losses(hooked)
    got = grads(hooked.mean(), shape_params + others)
    for a, b in zip(got, [*want_shape, *want_others]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("gamma_0", [-13.3, -9.0, -5.0, 0.0])
def test_windowed_reconstruction_equals_the_256_way_softmax(gamma_0):
    from udpm.objectives.vdm import reconstruction

    gamma_0 = torch.tensor(gamma_0, dtype=torch.float64)
    k = torch.randint(0, 256, (4, 3, 8, 8))
    k[0, 0, 0, :2] = torch.tensor([0, 255])  # the edge bins
    x, eps_0 = bin_centres(k), 3 * torch.randn(4, 3, 8, 8)
    z0_scaled = x.double() + torch.exp(0.5 * gamma_0) * eps_0.double()
    full = decoder_log_probs(z0_scaled, gamma_0).double().gather(-1, k[..., None])[..., 0]
    want = -full.flatten(1).sum(1)
    torch.testing.assert_close(reconstruction(x, eps_0, gamma_0), want, rtol=1e-5, atol=1e-3)


# --- DDPM's discrete bound (Ho et al. 2020) ---------------------------------------------------


class OptimalUniformX0(torch.nn.Module):
    """``E[x_0 | x_t]`` for i.i.d. uniform 8-bit data ``k/127.5 - 1``, as an x0-predictor."""

    def __init__(self, process):
        super().__init__()
        self.process = process

    def forward(self, x_t, time, labels=None):
        t = torch.round(time.double() * self.process.num_timesteps - 0.5).long()
        alpha, sigma = (c.view(-1, 1, 1, 1, 1) for c in self.process.alpha_sigma(t))
        centres = torch.arange(256, dtype=torch.float64) / 127.5 - 1
        logits = -((x_t.double()[..., None] - alpha * centres) ** 2) / (2 * sigma**2)
        return (logits.softmax(-1) * centres).sum(-1).float()


def test_ddpm_bound_is_never_below_the_entropy_of_uniform_bytes():
    """For the Bayes-optimal x̂₀ too (its Gaussian decoder of std sqrt(β_1) is not tight)."""
    from udpm.objectives.ddpm_bound import ddpm_bound
    from udpm.objectives.denoiser import Denoiser
    from udpm.processes.gaussian import DiscreteGaussianProcess

    process = DiscreteGaussianProcess.linear(100, 1e-4, 0.2)  # a short chain: a cheap test
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (512, 1, 4, 4), generator=gen).float() / 127.5 - 1
    for denoiser in (Denoiser(OptimalUniformX0(process), "x0"), Denoiser(SmallNet(), "eps")):
        draws = []
        for _ in range(8):
            t = process.sample_times(len(x), generator=gen)
            noise = torch.randn(x.shape, generator=gen)
            bound = ddpm_bound(denoiser, process, x, t, noise)
            assert torch.allclose(bound.bpd, sum(bound.term_bpd().values()))
            draws.append(bound.bpd.detach())
        bpd = torch.stack(draws).mean(0)
        assert bpd.mean().item() > 8 - 3 * bpd.std().item() / math.sqrt(len(bpd))


# --- the sampler -----------------------------------------------------------------------------


def test_ancestral_sampler_with_the_optimal_denoiser_converges_to_gaussian_data():
    """The chain's variance deficit at finite T shrinks as T grows, towards the data's."""
    from udpm.samplers.vdm import sample_vdm

    variance = 0.09
    process = VDMProcess(randomised("monotone", scale=1.0), GAMMA_0, GAMMA_1)
    net = OptimalGaussianDenoiser(process, variance)
    draws = {T: sample_vdm(net, process, (1, 8, 8), n=500, seed=0, steps=T) for T in (50, 200, 800)}
    variances = [x.var().item() for x in draws.values()]
    assert variances[0] < variances[1] < variances[2]
    assert variances[2] == pytest.approx(variance, rel=0.03)
    assert all(abs(x.mean().item()) < 0.01 for x in draws.values())
    k = (draws[50].double() + 1) * 128 - 0.5  # decoded onto the 8-bit bin centres
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert torch.equal(draws[50], sample_vdm(net, process, (1, 8, 8), n=500, seed=0, steps=50))
