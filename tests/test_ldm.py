"""Latent diffusion (Rombach et al. 2022): the KL autoencoder, the latent's scale, both stages.

The mathematics is checked without training: an exactly invertible "autoencoder" (a pixel
unshuffle) and the analytic denoiser of Gaussian data, driven through the real sampler and
decoder, must give back the pixel-space Gaussian.
"""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

import udpm
from udpm import checkpoint as ckpt
from udpm.cli import main
from udpm.config import flat_config
from udpm.config.autoencoder import sha256_file
from udpm.errors import UDPMError
from udpm.eval.speed import benchmark, count_flops
from udpm.methods import get_method
from udpm.networks.latent_diffusion import LatentDiffusion, latent_sums
from udpm.objectives.autoencoder import DiagonalGaussian
from udpm.pipeline import Pipeline
from udpm.processes.gaussian import DiscreteGaussianProcess, gaussian_process_from_config
from udpm.train.loop import train

from .test_train import TINY_G, tiny_config, tiny_npz  # noqa: F401  (fixture)

TINY_AE = dict(latent_channels=4, model_channels=8, channel_mult=[1, 2], num_blocks=1)


def ae_config(data, **kw):
    values = dict(network=TINY_AE, perceptual="none", disc_weight=0.0, lr=1e-3)
    return tiny_config(data, method="autoencoder", **{**values, **kw})


def ldm_config(data, autoencoder, **kw):
    return tiny_config(data, method="ldm", autoencoder=str(autoencoder), T=50, **kw)


# --- the first stage's mathematics ------------------------------------------------------------


def test_diagonal_gaussian_kl_is_torch_distributions_kl():
    mean, logvar = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    q = DiagonalGaussian(mean, logvar)
    p_q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p_0 = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(p_q, p_0).flatten(1).sum(1)
    assert torch.allclose(q.kl(), expected, atol=1e-5)
    assert q.kl().shape == (3,)


def test_log_variance_is_clamped_and_sampling_is_deterministic_given_noise():
    moments = torch.cat(
        [torch.zeros(1, 2, 1, 1), torch.tensor([-100.0, 100.0]).view(1, 2, 1, 1)], 1
    )
    q = DiagonalGaussian.from_moments(moments)
    assert q.logvar.flatten().tolist() == [-30.0, 20.0]
    noise = torch.randn(1, 2, 1, 1)
    assert torch.equal(q.sample(noise), q.sample(noise))
    assert torch.allclose(q.sample(noise), q.std * noise)


def test_latent_diffusion_schedule_is_linear_in_sqrt_beta():
    process = DiscreteGaussianProcess.scaled_linear(1000, 0.0015, 0.0195)
    root = process.betas.sqrt()
    assert torch.allclose(root.diff(), root.diff()[0].expand(999), atol=1e-12)
    assert torch.isclose(process.betas[0], torch.tensor(0.0015, dtype=torch.float64))
    assert torch.isclose(process.betas[-1], torch.tensor(0.0195, dtype=torch.float64))
    again = gaussian_process_from_config(process.to_config())
    assert torch.equal(again.betas, process.betas)
    plain = DiscreteGaussianProcess.linear(1000, 0.0015, 0.0195)
    assert not torch.allclose(plain.betas, process.betas)  # the two schedules differ


# --- an exactly invertible autoencoder -------------------------------------------------------


class UnshuffleAutoencoder(torch.nn.Module):
    """Encoder: pixel-unshuffle by ``f`` (a permutation), σ = e^-15; decoder: its inverse."""

    def __init__(self, channels=1, factor=2):
        super().__init__()
        self.factor, self.latent_channels = factor, channels * factor**2
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def latent_shape(self, image_shape):
        c, h, w = image_shape
        return (c * self.factor**2, h // self.factor, w // self.factor)

    def encode(self, x):
        z = F.pixel_unshuffle(x, self.factor)
        return DiagonalGaussian(z, torch.full_like(z, -30.0))

    def decode(self, z):
        return F.pixel_shuffle(z, self.factor)


class GaussianEps(torch.nn.Module):
    """The exact ε-prediction for data ``z_0 ~ N(μ, Σ)`` (flattened): ``E[ε | z_t]``."""

    def __init__(self, process, mu, cov):
        super().__init__()
        self.process, self.mu, self.cov = process, mu.double(), cov.double()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z_t, time, class_labels=None):
        T = self.process.num_timesteps
        t = torch.round(time.double() * T - 0.5).long()
        assert bool((t == t[0]).all())  # the sampler steps the whole batch at one time
        alpha, sigma = (c.item() for c in self.process.alpha_sigma(t[0]))
        x = z_t.flatten(1).double()
        eye = torch.eye(len(self.mu), dtype=torch.float64)
        # E[z_0 | z_t] = μ + α Σ (α² Σ + σ² I)^-1 (z_t - α μ)
        gain = alpha * self.cov @ torch.linalg.inv(alpha**2 * self.cov + sigma**2 * eye)
        x0 = self.mu + (x - alpha * self.mu) @ gain.T
        return ((x - alpha * x0) / sigma).float().view_as(z_t)


def test_an_invertible_autoencoder_round_trips_exactly_and_the_scale_whitens_the_first_batch():
    ldm = LatentDiffusion(torch.nn.Identity(), UnshuffleAutoencoder(3, 2))
    x = torch.rand(16, 3, 8, 8) * 6 + 0.5  # std about 1.7, mean 3.5
    ae = ldm.autoencoder
    assert torch.equal(ae.decode(ae.encode(x).mode()), x)
    zeros = torch.zeros(16, 12, 4, 4)
    ldm.measure_latent(latent_sums(ldm.raw_latent(x, zeros)))
    z = ldm.encode(x, zeros)
    assert abs(z.std().item() - 1) < 1e-5 and abs(z.mean().item()) < 1e-5
    assert float(ldm.latent_scale) == pytest.approx(1 / x.std().item(), rel=1e-5)
    assert torch.allclose(ldm.decode(z), x, atol=1e-5)


def test_the_latent_sampler_and_decoder_reproduce_a_pixel_space_gaussian():
    torch.manual_seed(1)
    d = 4  # one 1-channel 2x2 image; the latent is 4x1x1
    a = torch.randn(d, d, dtype=torch.float64)
    mu_x, cov_x = (
        torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=torch.float64),
        a @ a.T + 0.5 * torch.eye(d),
    )
    pixels = torch.distributions.MultivariateNormal(mu_x, cov_x)
    ae = UnshuffleAutoencoder(1, 2)
    perm = (
        F.pixel_unshuffle(torch.arange(d, dtype=torch.float64).view(1, 1, 2, 2), 2).flatten().long()
    )
    first = pixels.sample((512,)).float().view(-1, 1, 2, 2)
    config = flat_config(method="ldm", channels=1, resolution=2)
    process = DiscreteGaussianProcess.scaled_linear()
    ldm = LatentDiffusion(torch.nn.Identity(), ae)
    ldm.measure_latent(latent_sums(ldm.raw_latent(first, torch.zeros(512, 4, 1, 1))))
    s, m = float(ldm.latent_scale), float(ldm.latent_mean)
    assert s < 0.9  # the scale matters: the data is far from unit variance
    # The data of the latent diffusion: z' = s (P x - m) ~ N(s (P μ - m), s² P Σ Pᵀ).
    mu_z, cov_z = s * (mu_x[perm] - m), s**2 * cov_x[perm][:, perm]
    ldm.unet = GaussianEps(process, mu_z, cov_z)
    pipe = Pipeline(ldm, process, config)
    n, K = 4000, process.num_timesteps
    gen = torch.Generator().manual_seed(0)
    noises = [torch.randn(n, 4, 1, 1, generator=gen) for _ in range(K)]
    x = pipe.spec.sample(pipe, range(n), noises, None, pipe.sampler_options()).images
    x = x.double().flatten(1)
    assert torch.allclose(x.mean(0), mu_x, atol=4 * (cov_x.diag().max() / n).sqrt().item())
    assert (torch.cov(x.T) - cov_x).abs().max() < 0.08 * cov_x.abs().max()


# --- both stages through the trainer -----------------------------------------------------------


@pytest.fixture
def stage1(tmp_path, tiny_npz):  # noqa: F811
    return train(ae_config(tiny_npz, steps=2), tmp_path / "ae", progress=False)


def test_stage2_trains_resumes_and_keeps_the_autoencoder_bit_identical(tmp_path, tiny_npz, stage1):  # noqa: F811
    cfg = ldm_config(tiny_npz, stage1, steps=4)
    assert cfg.settings.autoencoder_sha256 == sha256_file(stage1)
    straight = train(cfg, tmp_path / "a", progress=False)
    train(ldm_config(tiny_npz, stage1, steps=2), tmp_path / "b", progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    a, meta = ckpt.load_model(straight)
    b, _ = ckpt.load_model(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ae_state, _ = ckpt.load_model(stage1)
    for k, v in ae_state.items():  # EMA (model file) and training weights (state file) alike
        assert torch.equal(a[f"autoencoder.{k}"], v), k
    trained = ckpt.load_state(ckpt.state_path(tmp_path / "a", 4))["method"]["modules"]["G"]
    assert all(torch.equal(trained[f"autoencoder.{k}"], v) for k, v in ae_state.items())
    assert meta["config"]["settings"]["autoencoder_sha256"] == sha256_file(stage1)


def test_the_patch_discriminator_joins_at_disc_start(tmp_path, tiny_npz):  # noqa: F811
    cfg = ae_config(tiny_npz, steps=3, disc_weight=0.5, disc_start=1)
    cfg = cfg.replace(discriminator=dict(model_channels=8, num_layers=1))
    run = tmp_path / "gan"
    train(cfg, run, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "loss_d" not in records[0] and all("loss_d" in r for r in records[1:])
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["g_adv"]) for r in records[1:])
    state = ckpt.load_state(ckpt.state_path(run, 3))["method"]
    assert "D" in state["modules"] and state["optimizers"]["D"]["state"]  # D took steps


def test_the_optimiser_holds_only_the_unet(tiny_npz, stage1):  # noqa: F811
    method = get_method("ldm")(ldm_config(tiny_npz, stage1), "cpu")
    held = {id(p) for group in method.optimizers["G"].param_groups for p in group["params"]}
    assert held == {id(p) for p in method.generator.unet.parameters()}
    assert not any(p.requires_grad for p in method.generator.autoencoder.parameters())


def test_the_scale_survives_save_load_and_sample_without_the_autoencoder_file(
    tmp_path,
    tiny_npz,  # noqa: F811
    stage1,
):
    run = tmp_path / "ldm"
    train(ldm_config(tiny_npz, stage1, steps=2), run, progress=False)
    shutil.rmtree(tmp_path / "ae")  # sampling needs the LDM's own file only
    pipe = udpm.load(run)
    net = pipe.network
    state = ckpt.load_state(ckpt.state_path(run, 2))["ema"]
    assert int(net.latent_measured) == 1 and float(net.latent_scale) != 1.0
    assert float(net.latent_scale) == float(state["latent_scale"])
    assert float(net.latent_mean) == float(state["latent_mean"])
    images = pipe.sample(2, seed=5, sampler="ddim", steps=4)
    assert images.shape == (2, 3, 16, 16) and torch.equal(
        images, pipe.sample(2, seed=5, sampler="ddim", steps=4)
    )
    # The images are D(z'/s + m) of the latent sampler's z': recompute them by hand.
    from udpm.objectives.denoiser import Denoiser
    from udpm.samplers.gaussian import sample_ddim

    z = sample_ddim(
        Denoiser(net.unet, "eps"), pipe.process, (4, 8, 8), n=2, seed=5, steps=4, eta=0.0
    )
    by_hand = net.autoencoder.decode(z / float(net.latent_scale) + float(net.latent_mean))
    assert torch.allclose(images, by_hand.clamp(-1, 1), atol=1e-5)
    net.latent_scale.mul_(2)  # the test can fail: the scale is used
    assert not torch.allclose(images, pipe.sample(2, seed=5, sampler="ddim", steps=4), atol=1e-3)


def test_bench_counts_the_decoder_once_per_image(tiny_npz):  # noqa: F811
    config = flat_config(method="ldm", resolution=16, network=TINY_G, autoencoder_network=TINY_AE)
    pipe = Pipeline.from_config(config)
    result = benchmark(pipe, repeats=1, batches=(1,), sampler="ddim", steps=3)
    z = torch.zeros(1, 4, 8, 8)
    unet = count_flops(lambda: pipe.network(z, torch.full((1,), 0.5)))
    decoder = count_flops(lambda: pipe.network.decode(z))
    assert result["nfe"] == 3 and decoder > 0
    assert result["flops_per_image"] == 3 * unet + decoder
    assert result["flops_full_resolution_pass"] == count_flops(
        lambda: pipe.network(torch.zeros(1, 4, 16, 16), torch.full((1,), 0.5))
    )


def test_a_short_stage1_run_improves_held_out_psnr(tmp_path):
    from udpm.data import load_source
    from udpm.eval.reconstruction import reconstruction_psnr
    from udpm.images import from_uint8
    from udpm.pipeline import build_network

    cfg = ae_config("emoji32", steps=60, batch_size=16, max_images=256, hflip=False, warmup=5)
    held_out = from_uint8(load_source("emoji32", resolution=16).images[-64:])
    torch.manual_seed(cfg.seed)  # the trainer's initial weights
    before = reconstruction_psnr(build_network(cfg), held_out)["psnr_db"]
    after = reconstruction_psnr(
        udpm.load(train(cfg, tmp_path / "ae", progress=False)).network, held_out
    )
    assert after["psnr_db"] > before + 3, (before, after)


# --- the command line ----------------------------------------------------------------------


def test_both_stages_from_the_command_line(tmp_path, tiny_npz, capsys):  # noqa: F811
    tiny = ["--data", str(tiny_npz), "--resolution", "16", "--batch-size", "4", "--steps", "2",
            "--no-progress", "--set", "network.model_channels=8",
            "--set", "network.channel_mult=[1,2]"]  # fmt: skip
    assert main(["train", "--preset", "emoji32-cpu-ae", "--out", str(tmp_path / "ae"), *tiny]) == 0
    ldm = ["train", "--preset", "emoji32-cpu-ldm", "--out", str(tmp_path / "ldm"), *tiny,
           "--set", "network.attn_resolutions=[]", "--set", "T=20"]  # fmt: skip
    assert main(ldm) == 1 and "pass --autoencoder" in capsys.readouterr().err
    assert not (tmp_path / "ldm").exists()
    assert main([*ldm, "--autoencoder", str(tmp_path / "ae")]) == 0
    out = tmp_path / "png"
    assert main(["sample", "--checkpoint", str(tmp_path / "ldm"), "--out", str(out), "--n", "2",
                 "--sampler", "ddim", "--steps", "3"]) == 0  # fmt: skip
    assert len(list(out.glob("*.png"))) == 2
    code = main(["sample", "--checkpoint", str(tmp_path / "ae"), "--out", str(tmp_path / "x")])
    assert code == 1 and "does not sample" in capsys.readouterr().err


def test_the_autoencoder_flag_is_checked(tmp_path, tiny_npz):  # noqa: F811
    ddpm = train(
        tiny_config(tiny_npz, method="ddpm", steps=1, T=10), tmp_path / "d", progress=False
    )
    with pytest.raises(UDPMError, match="expected a checkpoint of --method autoencoder"):
        ldm_config(tiny_npz, ddpm)
    with pytest.raises(UDPMError, match="checkpoint not found"):
        ldm_config(tiny_npz, tmp_path / "missing.safetensors")
    with pytest.raises(UDPMError, match="unknown config field 'autoencoder'"):
        tiny_config(tiny_npz, method="ddpm", autoencoder="x")


def test_the_autoencoder_must_fit_the_data(tmp_path, tiny_npz, stage1):  # noqa: F811
    with pytest.raises(UDPMError, match="trained on 3-channel 16 px images; this run has"):
        train(ldm_config(tiny_npz, stage1, resolution=32), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()  # refused before a run directory is made
