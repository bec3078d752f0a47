"""Gaussian samplers: step-by-step parity with diffusers, and exact moments on Gaussian data."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

from udpm.errors import UDPMError
from udpm.objectives.denoiser import Denoiser
from udpm.processes.gaussian import ContinuousGaussianProcess, DiscreteGaussianProcess
from udpm.samplers.gaussian import (
    sample_continuous,
    sample_ddim,
    sample_ddpm,
    seeded_gaussian_noises,
    time_grid,
    timestep_grid,
)

T = 1000
SHAPE = (3, 4, 4)
PREDICTION_TYPE = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


# --- a fixed model function of (x, t) ------------------------------------------------------


def toy_model(x, t_index, alphas_cumprod, parameterization="eps"):
    """A smooth, bounded stand-in for a trained network at integer timesteps ``t_index``.

    Near the Bayes denoiser of data ``N(0, 0.25 I)`` (so chains stay bounded) plus a
    nonlinear term (so a wrong timestep or coefficient shows).
    """
    ab = alphas_cumprod[t_index.long()].float().view(-1, 1, 1, 1)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    eps = sigma * x / (0.25 * ab + 1 - ab) + 0.05 * torch.sin(
        3 * x + t_index.view(-1, 1, 1, 1) / 100
    )
    x0 = 0.5 * torch.tanh(x) + 0.05 * torch.cos(2 * x)
    return {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[parameterization]


class ToyNetwork:
    """Our network contract around :func:`toy_model`; records every input ``x_t``."""

    def __init__(self, process, parameterization="eps"):
        self.process, self.parameterization = process, parameterization
        self.inputs = []

    def __call__(self, x, time, class_labels=None):
        self.inputs.append(x.clone())
        t_index = torch.round(time.double() * self.process.num_timesteps - 0.5)
        return toy_model(x, t_index, self.process.alphas_cumprod, self.parameterization)


def run_diffusers(scheduler, steps, noises, process, parameterization="eps", eta=None, **step_kw):
    """diffusers' loop with our noise maps; returns its inputs ``x_t`` per step and ``x_0``."""
    scheduler.set_timesteps(steps)
    x, inputs = noises[0].clone(), []
    for k, t in enumerate(scheduler.timesteps):
        inputs.append(x.clone())
        out = toy_model(x, t.expand(x.shape[0]), process.alphas_cumprod, parameterization)
        if eta is None:
            x = scheduler.step(out, t, x, **step_kw).prev_sample
        else:
            z = noises[k + 1] if k + 1 < len(noises) else torch.zeros_like(x)
            x = scheduler.step(out, t, x, eta=eta, variance_noise=z, **step_kw).prev_sample
    return inputs, x


@pytest.fixture
def ddpm_noise(monkeypatch):
    """Make diffusers' DDPM step draw our noise maps ``z_1, z_2, ..`` in order."""
    queue = []
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda *args, **kw: queue.pop(0))
    return queue


def float64_schedule(scheduler, process):
    """Hold diffusers' ᾱ in float64 (ours), so both sides do the same arithmetic.

    In float32, diffusers' ``1 - ᾱ_t/ᾱ_{t-1}`` loses about three digits where ``β ≈ 1e-4``;
    ``test_schedules_match_diffusers`` checks the two tables agree.
    """
    scheduler.alphas_cumprod = process.alphas_cumprod
    scheduler.one = scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def assert_trajectories_close(ours, theirs, atol):
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m, k=k: f"step {k}: {m}")


# --- grids ------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 7, 10, 30, 50, 999, 1000])
@pytest.mark.parametrize(
    "spacing, offset", [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)]
)
def test_timestep_grid_matches_diffusers(steps, spacing, offset):
    if (steps - 1) * (T // steps) + offset > T - 1:  # offset pushes the top past T - 1
        with pytest.raises(UDPMError, match="outside"):
            timestep_grid(T, steps, spacing, offset)
        return
    for cls in (DDPMScheduler, DDIMScheduler):
        ref = cls(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
        ref.set_timesteps(steps)
        assert timestep_grid(T, steps, spacing, offset) == ref.timesteps.tolist()


def test_grids():
    assert timestep_grid(T, 10) == list(range(900, -1, -100))
    assert timestep_grid(T, 10, "trailing") == list(range(999, 0, -100))
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(UDPMError, match=r"steps must be in 1..1000"):
        timestep_grid(T, 1001)


# --- parity with diffusers ------------------------------------------------------------------


@pytest.mark.parametrize("steps", [10, 50, 1000])
@pytest.mark.parametrize(
    "variance, variance_type", [("beta", "fixed_large"), ("beta_tilde", "fixed_small")]
)
def test_ddpm_matches_diffusers_step_by_step(ddpm_noise, steps, variance, variance_type):
    p = DiscreteGaussianProcess.linear()
    noises = seeded_gaussian_noises(SHAPE, range(3), steps)
    net = ToyNetwork(p)
    ours = sample_ddpm(net, p, SHAPE, noises=noises, steps=steps, variance=variance)
    ddpm_noise.extend(noises[1:])
    ref = DDPMScheduler(num_train_timesteps=T, clip_sample=False, variance_type=variance_type)
    inputs, x0 = run_diffusers(float64_schedule(ref, p), steps, noises, p)
    assert not ddpm_noise  # both chains used z_1..z_{K-1}: no noise on the last step
    assert_trajectories_close(net.inputs + [ours], inputs + [x0], atol=1e-5)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("steps, clip", [(10, False), (50, False), (10, True)])
def test_ddpm_matches_stock_diffusers(ddpm_noise, parameterization, steps, clip):
    """The float32 diffusers scheduler as shipped, every parameterisation, with clipping."""
    p = DiscreteGaussianProcess.linear()
    noises = seeded_gaussian_noises(SHAPE, range(2), steps)
    net = ToyNetwork(p, parameterization)
    ours = sample_ddpm(
        Denoiser(net, parameterization),
        p,
        SHAPE,
        noises=noises,
        steps=steps,
        variance="beta_tilde",
        clip_x0=0.4 if clip else False,
    )
    ddpm_noise.extend(noises[1:])
    ref = DDPMScheduler(
        num_train_timesteps=T,
        clip_sample=clip,
        clip_sample_range=0.4,
        prediction_type=PREDICTION_TYPE[parameterization],
    )
    inputs, x0 = run_diffusers(ref, steps, noises, p, parameterization)
    assert_trajectories_close(net.inputs + [ours], inputs + [x0], atol=3e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps, offset", [(10, 0), (50, 0), (50, 1), (1000, 0)])
def test_ddim_matches_diffusers_step_by_step(eta, steps, offset):
    p = DiscreteGaussianProcess.linear()
    noises = seeded_gaussian_noises(SHAPE, range(3), steps)
    net = ToyNetwork(p)
    grid = timestep_grid(T, steps, offset=offset)
    ours = sample_ddim(net, p, SHAPE, noises=noises, steps=grid, eta=eta)
    ref = DDIMScheduler(num_train_timesteps=T, clip_sample=False, steps_offset=offset)
    inputs, x0 = run_diffusers(float64_schedule(ref, p), steps, noises, p, eta=eta)
    assert_trajectories_close(net.inputs + [ours], inputs + [x0], atol=1e-5)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_matches_stock_diffusers(parameterization, clip):
    p = DiscreteGaussianProcess.linear()
    noises = seeded_gaussian_noises(SHAPE, range(2), 20)
    net = ToyNetwork(p, parameterization)
    ours = sample_ddim(
        Denoiser(net, parameterization),
        p,
        SHAPE,
        noises=noises,
        steps=20,
        eta=0.5,
        clip_x0=0.4 if clip else False,  # the toy's x̂ reaches about 0.55
    )
    ref = DDIMScheduler(
        num_train_timesteps=T,
        clip_sample=clip,
        clip_sample_range=0.4,
        prediction_type=PREDICTION_TYPE[parameterization],
    )
    inputs, x0 = run_diffusers(
        ref, 20, noises, p, parameterization, eta=0.5, use_clipped_model_output=True
    )
    assert_trajectories_close(net.inputs + [ours], inputs + [x0], atol=3e-5)


def test_previous_timestep_comes_from_the_grid(ddpm_noise):
    """Trailing spacing with 30 steps: the grid is 999, 966, 932, ... DDIM's η = 1 chain must
    step 966 -> 932 like diffusers' DDPM (which reads the grid), not to 966 - 1000//30 = 933
    like diffusers' DDIM step does."""
    p = DiscreteGaussianProcess.linear()
    grid = timestep_grid(T, 30, "trailing")
    assert grid[1:3] == [966, 932]
    noises = seeded_gaussian_noises(SHAPE, range(2), 30)
    ours_ddim = sample_ddim(ToyNetwork(p), p, SHAPE, noises=noises, steps=grid, eta=1.0)
    net = ToyNetwork(p)
    ours_ddpm = sample_ddpm(net, p, SHAPE, noises=noises, steps=grid, variance="beta_tilde")
    # The grid ends at t = 32 > 0, where diffusers draws noise for a variance of 1e-20.
    ddpm_noise.extend(noises[1:] + [torch.zeros_like(noises[0])])
    ref = DDPMScheduler(num_train_timesteps=T, clip_sample=False, timestep_spacing="trailing")
    inputs, x0 = run_diffusers(float64_schedule(ref, p), 30, noises, p)
    assert_trajectories_close(net.inputs + [ours_ddpm], inputs + [x0], atol=1e-5)
    torch.testing.assert_close(ours_ddim, ours_ddpm, atol=1e-5, rtol=0)  # DDIM η=1 is β̃-DDPM


# --- latents and contract ---------------------------------------------------------------------


def test_per_image_seeds_and_latent():
    p = DiscreteGaussianProcess.linear()
    net = ToyNetwork(p)
    a = sample_ddpm(net, p, SHAPE, n=3, seed=5, steps=10)
    b = sample_ddpm(net, p, SHAPE, noises=seeded_gaussian_noises(SHAPE, [5, 6, 7], 10), steps=10)
    assert torch.equal(a, b)
    torch.testing.assert_close(sample_ddpm(net, p, SHAPE, n=1, seed=6, steps=10)[0], a[1])
    # Deterministic DDIM draws only x_T, the same x_T as every other sampler for that seed.
    c = sample_ddim(net, p, SHAPE, n=2, seed=5, steps=10)
    x_T = seeded_gaussian_noises(SHAPE, [5, 6], 1)
    assert torch.equal(c, sample_ddim(net, p, SHAPE, noises=x_T, steps=10))
    assert not torch.allclose(c, sample_ddim(net, p, SHAPE, n=2, seed=7, steps=10))


def test_network_sees_contract_times():
    p = DiscreteGaussianProcess.linear()
    seen = []

    def net(x, time, class_labels):
        seen.append((time.clone(), class_labels))
        return torch.zeros_like(x)

    labels = torch.tensor([3, 1])
    sample_ddim(net, p, SHAPE, n=2, steps=4, class_labels=labels)
    times = torch.stack([s[0] for s in seen])
    torch.testing.assert_close(
        times, torch.tensor([[(t + 0.5) / T] * 2 for t in (750, 500, 250, 0)])
    )
    assert all(s[1] is labels for s in seen) and seen[0][0].dtype == torch.float32
    seen.clear()
    sample_continuous(net, ContinuousGaussianProcess(), SHAPE, n=2, steps=4)
    times = torch.stack([s[0] for s in seen])
    torch.testing.assert_close(times, torch.tensor([[t] * 2 for t in (1.0, 0.75, 0.5, 0.25)]))


def test_continuous_ancestral_is_ddim_eta_one():
    p = ContinuousGaussianProcess(resolution=32)

    def net(x, time, class_labels):
        return torch.tanh(x) * time.view(-1, 1, 1, 1)

    noises = seeded_gaussian_noises(SHAPE, range(2), 16)
    a = sample_continuous(Denoiser(net, "v"), p, SHAPE, noises=noises, steps=16)
    b = sample_continuous(Denoiser(net, "v"), p, SHAPE, noises=noises, steps=16, eta=1.0)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    c = sample_continuous(net, p, SHAPE, noises=noises, steps=16, variance="beta")
    assert not torch.allclose(a, c)


def test_errors():
    p = DiscreteGaussianProcess.linear()
    net = ToyNetwork(p)
    with pytest.raises(UDPMError, match="has no eta"):
        sample_ddpm(net, p, SHAPE, n=1, eta=0.5)
    with pytest.raises(UDPMError, match="no variance option"):
        sample_ddim(net, p, SHAPE, n=1, variance="beta")
    with pytest.raises(UDPMError, match=r"eta must lie in \[0, 1\]"):
        sample_ddim(net, p, SHAPE, n=1, eta=1.5)
    with pytest.raises(UDPMError, match="needs a continuous-time"):
        sample_continuous(net, p, SHAPE, n=1)
    with pytest.raises(UDPMError, match="expected 10 noise maps"):
        sample_ddpm(net, p, SHAPE, noises=seeded_gaussian_noises(SHAPE, [0], 3), steps=10)
    with pytest.raises(UDPMError, match="strictly decrease"):
        sample_ddim(net, p, SHAPE, n=1, steps=[10, 500])
    with pytest.raises(UDPMError, match="batch size n >= 1"):
        sample_ddim(net, p, SHAPE)
    with pytest.raises(UDPMError, match="unknown variance"):
        sample_ddpm(net, p, SHAPE, n=1, variance="learned")


# --- Gaussian data: the optimal denoiser is closed-form ----------------------------------------

D = 4  # a 1×2×2 image
MEAN = torch.tensor([0.5, -0.3, 0.2, 0.0], dtype=torch.float64)
_Q = torch.linalg.qr(
    torch.randn(D, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
)[0]
EIGS = torch.tensor([0.1, 0.25, 0.5, 1.0], dtype=torch.float64)
COV = _Q @ torch.diag(EIGS) @ _Q.T


class GaussianOracle:
    """``E[ε | x_t] = σ (α² C + σ² I)⁻¹ (x_t - α m)`` and ``E[x_0 | x_t] = m + α C (..)⁻¹ (..)``
    for data ``N(m, C)``, returned as the chosen parameterisation."""

    def __init__(self, process, parameterization="eps", mean=MEAN, cov=COV):
        self.process, self.parameterization = process, parameterization
        self.mean, self.cov = mean, cov
        self.eigs, self.basis = torch.linalg.eigh(cov)

    def __call__(self, x, time, class_labels=None):
        if isinstance(self.process, DiscreteGaussianProcess):
            t = torch.tensor(round(time[0].item() * self.process.num_timesteps - 0.5))
        else:
            t = time[0].double()
        alpha, sigma = (v.item() for v in self.process.alpha_sigma(t))
        inverse = self.basis @ torch.diag(1 / (alpha**2 * self.eigs + sigma**2)) @ self.basis.T
        r = (x.reshape(-1, D).double() - alpha * self.mean) @ inverse
        eps, x0 = sigma * r, self.mean + alpha * r @ self.cov
        out = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[self.parameterization]
        return out.float().reshape(x.shape)


def exact_moments(sampler, network, process, steps, stochastic, **kw):
    """Mean and covariance of the sampler's output, exactly: with an affine denoiser the
    sampler is affine in its noise maps, ``x_0 = b + Σ_j A_j e_j``. One image with all-zero
    noise gives ``b``; one image per unit noise vector gives a column of ``A``. Without
    ``stochastic`` only ``x_T`` varies (the step noises are zero)."""
    K = steps if isinstance(steps, int) else len(steps)
    maps = K if stochastic else 1  # the other maps stay zero
    batch = 1 + D * maps
    noises = [torch.zeros(batch, 1, 2, 2) for _ in range(K)]
    for k in range(maps):
        noises[k].view(batch, D)[1 + D * k : 1 + D * (k + 1)] = torch.eye(D)
    network = Denoiser(network, kw.pop("parameterization", "eps"))
    out = sampler(network, process, (1, 2, 2), noises=noises, steps=steps, **kw)
    out = out.reshape(batch, D).double()
    A = (out[1:] - out[0]).T
    return out[0], A @ A.T


def assert_moments(mean, cov, atol_mean, atol_cov, target_mean=MEAN, target_cov=COV):
    assert (mean - target_mean).abs().max() < atol_mean, (mean, target_mean)
    assert (cov - target_cov).abs().max() < atol_cov, (cov, target_cov)


@pytest.mark.parametrize("variance, atol_cov", [("beta", 2e-3), ("beta_tilde", 1e-2)])
def test_ddpm_reproduces_gaussian_data(variance, atol_cov):
    """Algorithm 2 with the optimal ε̂ recovers ``N(m, C)``. The true reverse variance lies
    between ``β̃`` and ``β`` (Ho et al., §3.2); ``β̃`` under-disperses by O(1/T): 0.0064 here,
    against 0.0006 for ``β``."""
    p = DiscreteGaussianProcess.linear()
    mean, cov = exact_moments(sample_ddpm, GaussianOracle(p), p, T, True, variance=variance)
    assert_moments(mean, cov, 1e-4, atol_cov)


def test_ddpm_moment_check_can_fail():
    """A denoiser for ``N(m, 1.1 C)``, or the chain without its step noise, is caught."""
    p = DiscreteGaussianProcess.linear()
    mean, cov = exact_moments(sample_ddpm, GaussianOracle(p, cov=1.1 * COV), p, T, True)
    assert (cov - COV).abs().max() > 3e-2
    mean, cov = exact_moments(sample_ddpm, GaussianOracle(p), p, T, False)  # z = 0
    assert (cov - COV).abs().max() > 3e-2


def euler_ddim_moments(alphas, sigmas):
    """DDIM with ``η = 0`` is Euler's method for ``dx̄/dσ̄ = ε̂`` in ``x̄ = x/α``, ``σ̄ = σ/α``
    (Song et al., eq. 14). For ``N(m, C)`` data ``ε̂ = σ̄ (x̄ - m)/(λ + σ̄²)`` along each
    eigenvector of ``C``, so every step scales ``x̄ - m`` by ``1 + (σ̄_s - σ̄_t) σ̄_t/(λ + σ̄_t²)``.
    ``alphas``, ``sigmas``: the grid's values, the data (1, 0) last. Returns the output's
    moments for ``x_T ~ N(0, I)``."""
    gain = torch.ones_like(EIGS)
    bars = [s / a for a, s in zip(alphas, sigmas)]
    for bar_t, bar_s in zip(bars[:-1], bars[1:]):
        gain = gain * (1 + (bar_s - bar_t) * bar_t / (EIGS + bar_t**2))
    G = _Q @ torch.diag(gain) @ _Q.T
    return MEAN - G @ MEAN, G @ G.T / alphas[0] ** 2  # x̄_T - m = x_T/α_T - m


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_ddim_is_euler_on_the_probability_flow(parameterization):
    p = DiscreteGaussianProcess.linear()
    grid = timestep_grid(T, 50)
    net = GaussianOracle(p, parameterization)
    mean, cov = exact_moments(sample_ddim, net, p, grid, False, parameterization=parameterization)
    alpha, sigma = p.alpha_sigma(torch.tensor(grid + [-1]))
    ref_mean, ref_cov = euler_ddim_moments(alpha.tolist(), sigma.tolist())
    assert_moments(mean, cov, 1e-4, 1e-4, ref_mean, ref_cov)
    # 50 Euler steps shrink the spread a little (about 8% here); 1000 steps converge.
    assert_moments(mean, cov, 5e-3, 0.06)
    mean, cov = exact_moments(sample_ddim, net, p, T, False, parameterization=parameterization)
    assert_moments(mean, cov, 5e-3, 5e-3)


def test_ddim_monte_carlo():
    """4000 seeded samples of 50-step DDIM: the sample moments agree with the exact ones
    (standard errors about 0.01 for the mean and 0.015 for the covariance)."""
    p = DiscreteGaussianProcess.linear()
    samples = sample_ddim(GaussianOracle(p), p, (1, 2, 2), n=4000, seed=0, steps=50)
    samples = samples.reshape(-1, D).double()
    alpha, sigma = p.alpha_sigma(torch.tensor(timestep_grid(T, 50) + [-1]))
    ref_mean, ref_cov = euler_ddim_moments(alpha.tolist(), sigma.tolist())
    assert_moments(samples.mean(0), samples.T.cov(), 0.05, 0.07, ref_mean, ref_cov)
    assert_moments(samples.mean(0), samples.T.cov(), 0.05, 0.1)


@pytest.mark.parametrize(
    "parameterization, variance, steps, atol_cov",
    [("eps", "beta", 256, 3e-3), ("v", "beta_tilde", 1024, 5e-3)],
)
def test_continuous_sampler_reproduces_gaussian_data(parameterization, variance, steps, atol_cov):
    """Ancestral sampling of the shifted cosine schedule recovers ``N(m, C)`` (``β̃``
    under-disperses by O(1/K): 0.011 at 256 steps, 0.0027 at 1024), and its η = 0 variant
    is Euler's method on the probability flow, like DDIM."""
    p = ContinuousGaussianProcess(resolution=32)  # shifted: logSNR + 2 log 2
    net = GaussianOracle(p, parameterization)
    kw = {"parameterization": parameterization}
    mean, cov = exact_moments(sample_continuous, net, p, steps, True, variance=variance, **kw)
    assert_moments(mean, cov, 1e-4, atol_cov)
    grid = time_grid(64)
    mean, cov = exact_moments(sample_continuous, net, p, grid, False, eta=0.0, **kw)
    alpha, sigma = p.alpha_sigma(torch.tensor(grid))
    ref = euler_ddim_moments(alpha.tolist() + [1.0], sigma.tolist() + [0.0])
    assert_moments(mean, cov, 1e-4, 1e-4, *ref)
