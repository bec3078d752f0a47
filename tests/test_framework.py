"""The framework's contracts: method registry, typed config, old checkpoints, x̂₀ clipping."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import udpm
from udpm.config import Config, apply_overrides, flat_config, preset_config
from udpm.config.migrate import migrate
from udpm.config.settings import SETTINGS, DDPMSettings, SimpleSettings, UDPMSettings
from udpm.errors import UDPMError
from udpm.methods import get_spec, names
from udpm.objectives.denoiser import Denoiser
from udpm.processes.gaussian import DiscreteGaussianProcess
from udpm.samplers.gaussian import sample_ddim

SRC = Path(__file__).resolve().parents[1] / "src" / "udpm"
METHOD_NAMES = {"udpm", "ddpm", "simple", "ddgan", "vdm", "ldm", "autoencoder"}


def test_no_module_outside_methods_compares_method_names():
    """Only ``methods/`` and ``config/`` may branch on a method's name; others ask the spec."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("methods", "config"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names_ = [
                    c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)
                ]
                if any(n in METHOD_NAMES for n in names_ if isinstance(n, str)):
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"method-name comparisons outside methods/: {offenders}"


def test_the_check_above_can_fail(tmp_path):
    tree = ast.parse('if config.method == "udpm":\n    pass\n')
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert found and found[0].comparators[0].value in METHOD_NAMES


@pytest.mark.parametrize("name", names())
def test_every_registered_method_has_a_complete_spec(name):
    if name not in SETTINGS:
        pytest.skip(f"{name} is registered but its module is not part of this build yet")
    spec = get_spec(name)
    assert spec.name == name and spec.settings is SETTINGS[name]
    assert dataclasses.is_dataclass(spec.settings) and spec.settings.__dataclass_params__.frozen
    assert hasattr(spec.settings(), "optim")
    with pytest.raises(UDPMError, match="takes no option"):
        spec.options({"no_such_option": 1})


def test_config_is_frozen_and_round_trips():
    config = preset_config("emoji32-cpu-ddpm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3
    assert Config.from_dict(config.to_dict()) == config
    assert isinstance(config.settings, DDPMSettings)


def test_values_are_parsed_by_the_field_type():
    config = apply_overrides(
        preset_config("emoji32-cpu"), ["lr=1e-5", "warmup=1e3", "r1=[1, 2, 3]"]
    )
    assert config.optim.lr == 1e-5 and isinstance(config.optim.lr, float)
    assert config.optim.warmup == 1000 and isinstance(config.optim.warmup, int)
    assert config.settings.r1 == (1.0, 2.0, 3.0)
    for bad, message in [
        ("lr=fast", "must be a number"),
        ("perceptual=vgg", "must be one of lpips, none"),
        ("steps=0", "at least 1"),
        ("keep=0", "at least 1"),
        ("lr=.nan", "positive number"),
        ("warmup=1.5", "must be an integer"),
    ]:
        with pytest.raises(UDPMError, match=message):
            apply_overrides(preset_config("emoji32-cpu"), [bad])


def test_changing_the_method_starts_from_its_own_settings():
    config = apply_overrides(preset_config("emoji32-cpu"), ["method=ddpm", "T=20"])
    assert isinstance(config.settings, DDPMSettings) and config.settings.T == 20
    assert config.optim.betas == (0.9, 0.999)  # DDPM's Adam, not UDPM's (0.5, 0.9)


def test_each_baseline_preset_has_its_own_papers_optimiser():
    """Ho et al. used Adam's defaults; the adversarial (0.5, 0.9) stays with the GAN recipe."""
    for name in ("emoji32-cpu-ddpm", "emoji32-cpu-simple", "cifar10-ddpm"):
        assert preset_config(name).optim.betas == (0.9, 0.999), name
    paper = preset_config("cifar10")
    # The UDPM authors' code: Adam defaults, no clipping, ½(L_real + L_fake) + (γ/2)·R1.
    assert paper.optim.betas == (0.9, 0.999) and paper.optim.grad_clip is None
    assert paper.settings.d_loss == "mean"


def test_legacy_flat_configs_are_converted_faithfully():
    old_udpm = {"method": "udpm", "alphas": [0.5, 0.2, 0.001], "sigmas": [0.1, 0.2, 0.3],
                "lr": 2e-4, "adam_betas": [0.5, 0.9], "warmup": 200, "grad_clip": 1.0,
                "diffusion": {}, "perceptual": "none"}  # fmt: skip
    config = Config.from_dict(old_udpm)
    assert isinstance(config.settings, UDPMSettings)
    assert config.optim.betas == (0.5, 0.9) and config.optim.lr == 2e-4  # as trained
    assert config.settings.d_loss == "sum"  # 0.1.0 summed D's GAN terms
    old_simple = {"method": "simple", "lr": 2e-4, "adam_betas": [0.5, 0.9],
                  "diffusion": {"process": {"kind": "continuous", "schedule": "cosine",
                                            "base_resolution": 64, "resolution": 32},
                                "parameterization": "v", "weighting": "v",
                                "multiscale_base": 16, "sampler": "ancestral",
                                "sample_steps": 256, "eta": None}}  # fmt: skip
    config = Config.from_dict(old_simple)
    assert isinstance(config.settings, SimpleSettings)
    assert config.settings.weighting == "v" and config.settings.multiscale_base == 16
    assert migrate(config.to_dict()) == config.to_dict()  # current dicts pass unchanged


OLD_MODEL = Path(__file__).parent / "data" / "emoji32-udpm-0.1.0.safetensors"


def test_the_0_1_0_shipped_model_still_loads():
    """The model udpm 0.1.0 shipped (flat config), kept as a fixture: old files convert."""
    from udpm.checkpoint import read_meta

    assert "settings" not in read_meta(OLD_MODEL)["config"]  # written by 0.1.0
    model = udpm.load(OLD_MODEL)
    assert isinstance(model.config.settings, UDPMSettings) and model.spec.has_levels
    assert model.config.settings.d_loss == "sum" and model.config.optim.betas == (0.5, 0.9)
    scalar = udpm.load(OLD_MODEL, scalar_posterior=True)
    exact, scalar = model.sample(2, seed=1), scalar.sample(2, seed=1)
    assert not torch.equal(exact, scalar)  # the config field reaches the process
    with pytest.raises(UDPMError, match="no setting"):
        udpm.load(T=3)


def test_return_levels_is_refused_for_methods_without_levels(tmp_path):
    network = dict(
        model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[], resolution=8
    )
    config = flat_config(method="ddpm", resolution=8, T=5, network=network)
    pipe = udpm.Pipeline.from_config(config)
    assert pipe.sample(2, seed=0, steps=2).shape == (2, 3, 8, 8)
    with pytest.raises(UDPMError, match="no per-level previews"):
        pipe.sample(2, return_levels=True)
    # The latent is the list of maps its sampler consumes: K for ancestral, 1 for DDIM η = 0.
    assert len(pipe.latent_shapes(steps=4)) == 4
    assert len(pipe.latent_shapes(sampler="ddim", steps=4, eta=0.0)) == 1


# --- x̂₀ clipping: DDIM on Gaussian data with the exact denoiser plus a deliberate error ---

S2 = 0.25  # data variance: x_0 ~ N(0, S2 I), well inside [-1, 1]


class BiasedOracle(torch.nn.Module):
    """The exact ε̂ of N(0, S2 I) data plus a constant error ``delta`` at every step."""

    def __init__(self, process, delta):
        super().__init__()
        self.process, self.delta = process, delta

    def forward(self, x, time, labels=None):
        t = (time.double() * self.process.num_timesteps - 0.5).round().long()
        ab = self.process.alphas_cumprod[t].view(-1, 1, 1, 1).float()
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        x0 = alpha * S2 / (ab * S2 + sigma**2) * x
        return (x - alpha * x0) / sigma + self.delta


def _ddim_error(steps: int, clip: bool) -> float:
    p = DiscreteGaussianProcess.linear()
    kw = dict(n=256, seed=0, steps=steps, clip_x0=clip)
    exact = sample_ddim(Denoiser(BiasedOracle(p, 0.0)), p, (1, 4, 4), **kw)
    biased = sample_ddim(Denoiser(BiasedOracle(p, 0.3)), p, (1, 4, 4), **kw)
    return float((biased - exact).abs().mean())


def test_clipping_x0_stops_ddim_from_amplifying_an_error_with_more_steps():
    """On the leading grid DDIM's first step reads x̂₀ = (x_t - σ ε̂)/α with σ/α ≈ 150 at
    t = 980: an ε error becomes an x̂₀ far outside the data, and η = 0 never forgets it.
    Unclipped, the same error costs more with more steps; clipped, far less and flat."""
    free = {k: _ddim_error(k, clip=False) for k in (10, 100)}
    clipped = {k: _ddim_error(k, clip=True) for k in (10, 100)}
    assert free[100] - free[10] > 0.05  # unclipped: worse with more steps
    assert abs(clipped[100] - clipped[10]) < 0.02  # clipped: about the same
    assert all(clipped[k] < 0.6 * free[k] for k in free)


def test_ddpm_models_clip_by_default_and_the_flag_turns_it_off():
    options = get_spec("ddpm").options({}, preset_config("emoji32-cpu-ddpm"))
    assert options["clip_x0"] is True
    assert get_spec("ddpm").options({"clip_x0": False})["clip_x0"] is False


# --- UDPM recipe options (quality issue): lazy R1, D in eval mode, instance-noise schedule ---


def test_instance_noise_tied_to_the_run_length_ends_where_asked():
    from udpm.objectives.udpm import instance_noise_std

    assert instance_noise_std(0, 0.4, 0.99, 200, end=1e-3, steps=5000) == pytest.approx(0.4)
    assert instance_noise_std(5000, 0.4, 0.99, 200, end=1e-3, steps=5000) == pytest.approx(1e-3)
    mid = instance_noise_std(2500, 0.4, 0.99, 200, end=1e-3, steps=5000)
    assert mid == pytest.approx((0.4 * 1e-3) ** 0.5)  # geometric: the mean in log space
    assert instance_noise_std(13000, 0.4, 0.99, 200) == pytest.approx(0.4 * 0.99**65)


def test_diversity_ratios_see_collapse():
    from udpm.eval.diversity import diversity_ratios

    g = torch.Generator().manual_seed(0)
    real = torch.randn(64, 3, 8, 8, generator=g)
    same = diversity_ratios(torch.randn(64, 3, 8, 8, generator=g), real)
    collapsed = diversity_ratios(real[:1].repeat(64, 1, 1, 1) + 0.01 * real, real)
    assert 0.9 < same["top_std_ratio"] < 1.1 and 0.9 < same["nn_ratio"] < 1.1
    assert collapsed["top_std_ratio"] < 0.1 and collapsed["nn_ratio"] < 0.1


def test_the_progress_line_keeps_the_newest_diversity_ratios_in_view():
    from udpm.train.report import TrainReport

    cfg = flat_config(steps=10)
    report = TrainReport(cfg, 0, progress=False, enabled=False)
    report.grid(Path("g.png"), 0.1, {"top_std_ratio": 0.812, "nn_ratio": 0.5, "x": 1})
    report.stepped({"loss_g": 1.0, "other": 2.0})
    assert report.progress.postfix == {"loss_g": "1", "top_std": "0.81", "nn": "0.50"}


def test_feature_matching_compares_each_block_and_holds_the_real_side_fixed():
    from udpm.networks import Discriminator
    from udpm.objectives.udpm import feature_matching

    torch.manual_seed(0)
    D = Discriminator(model_channels=8, channel_mult=(1, 2), resolution=16, num_levels=2)
    y = torch.randn(4, 3, 16, 16)
    y_hat = (y + 0.1 * torch.randn_like(y)).requires_grad_(True)
    logits, feats = D(y_hat, 0.5, return_features=True)
    torch.testing.assert_close(logits, D(y_hat, 0.5))  # the same logits either way
    assert len(feats) == 2 and feats[1].shape[-1] == 8
    real = [f.detach().requires_grad_(True) for f in D(y, 0.5, return_features=True)[1]]
    loss = feature_matching(feats, real)
    loss.backward()
    assert loss > 0 and y_hat.grad.abs().sum() > 0
    assert all(r.grad is None for r in real)  # D_i(y) is a fixed target
    same = D(y, 0.5, return_features=True)[1]
    assert feature_matching(same, same) == 0


def test_mode_seeking_is_the_inverse_output_gap_over_input_gap():
    """MSGAN's term (Mao et al. 2019): 1 / (mean|ŷ_a - ŷ_b| / mean|x_a - x_b| + eps), with
    the batch's first half paired with its second; G lowers it by spreading its outputs."""
    from udpm.objectives.udpm import mode_seeking

    x = torch.tensor([0.0, 1.0, 2.0, 5.0]).reshape(4, 1, 1, 1)  # pairs (0, 2), (1, 5)
    y = torch.tensor([0.0, 0.0, 1.0, 3.0]).reshape(4, 1, 1, 1)  # gaps 1, 3
    expected = 1.0 / ((1.0 + 3.0) / 2 / ((2.0 + 4.0) / 2) + 1e-5)
    torch.testing.assert_close(mode_seeking(y, x), torch.tensor(expected))
    collapsed = mode_seeking(torch.zeros(4, 1, 1, 1), x)
    assert collapsed > 1e4 * mode_seeking(y, x)  # identical outputs cost the most
    y_hat = y.clone().requires_grad_(True)
    mode_seeking(y_hat, x).backward()
    step = y_hat - 0.1 * y_hat.grad  # a gradient step moves each pair apart
    assert (step[2:] - step[:2]).abs().sum() > (y[2:] - y[:2]).abs().sum()
    assert mode_seeking(torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)) == 0  # no pair


def test_bounded_mode_seeking_stops_rewarding_at_the_data_pair_distance():
    """With the targets given, the output gap counts only up to the targets' own gap: the
    same value as MSGAN's term below it, a constant (no gradient) above it."""
    from udpm.objectives.udpm import mode_seeking

    x = torch.tensor([0.0, 1.0, 2.0, 5.0]).reshape(4, 1, 1, 1)  # input gaps 2, 4
    y = torch.tensor([0.0, 0.0, 1.0, 1.0]).reshape(4, 1, 1, 1)  # target gaps 1, 1
    near = torch.tensor([0.0, 0.0, 0.5, 0.5]).reshape(4, 1, 1, 1)  # gaps below the data's
    torch.testing.assert_close(mode_seeking(near, x, y), mode_seeking(near, x))
    far = torch.tensor([0.0, 0.0, 3.0, 3.0]).reshape(4, 1, 1, 1).requires_grad_(True)
    bounded = mode_seeking(far, x, y)
    torch.testing.assert_close(bounded, mode_seeking(y, x))  # capped at the data's gap
    bounded.backward()
    assert far.grad.abs().sum() == 0  # no reward for spreading further
    assert mode_seeking(far, x) < bounded  # the plain term keeps rewarding it


def test_lazy_r1_and_level_weights_are_validated():
    from udpm.methods.udpm import validate

    with pytest.raises(UDPMError, match="r1_every"):
        validate(flat_config(r1_every=0))
    with pytest.raises(UDPMError, match="one entry per level"):
        validate(flat_config(level_weights=[1, 1]))
    with pytest.raises(UDPMError, match="lambda_ms needs one entry per level"):
        validate(flat_config(lambda_ms=[1.0]))


def test_recipe_options_train_and_resume_exactly(tmp_path):
    from udpm import checkpoint as ckpt
    from udpm.train.loop import train

    from .test_train import tiny_config

    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (12, 16, 16, 3), generator=rng, dtype=torch.uint8)
    import numpy as np

    np.savez(tmp_path / "d.npz", images=images.numpy())
    # (Not instance_noise_end: it follows the run's target, which a resume here changes.)
    options = dict(r1_every=2, d_eval_in_g_step=True, level_weights=[1, 2, 3], lambda_ms=[0, 0, 1])
    options["ms_bounded"] = True
    whole = train(
        tiny_config(tmp_path / "d.npz", steps=4, **options), tmp_path / "a", progress=False
    )
    train(tiny_config(tmp_path / "d.npz", steps=2, **options), tmp_path / "b", progress=False)
    resumed = train(
        tiny_config(tmp_path / "d.npz", steps=4, **options), tmp_path / "b", resume=True,
        progress=False,
    )  # fmt: skip
    a, _ = ckpt.load_model(whole)
    b, _ = ckpt.load_model(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
