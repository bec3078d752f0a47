"""DDGAN through the shared loop and commands: resume equality, sampling from a path, bench."""

import json

import pytest
import torch

import udpm
from udpm import checkpoint as ckpt
from udpm.cli import main
from udpm.config import preset_config
from udpm.errors import UDPMError
from udpm.train.loop import train

from .test_train import TINY_G, tiny_config, tiny_npz  # noqa: F401  (fixture)

# T = 2 steps, a 4-dim z, R1 every other step; no dropout, so runs compare exactly.
DDGAN = dict(
    method="ddgan",
    T=2,
    z_dim=4,
    lazy_r1=2,
    network={**TINY_G, "dropout": 0.0, "embedding_channels": 16},
)


def ddgan_config(data, **kw):
    return tiny_config(data, **{**DDGAN, **kw})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import numpy as np

    tmp = tmp_path_factory.mktemp("ddgan")
    rng = np.random.default_rng(0)
    data = tmp / "tiny.npz"
    np.savez(data, images=rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8))
    train(ddgan_config(data, steps=2), tmp / "run", progress=False)
    return tmp / "run"


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, tiny_npz):  # noqa: F811
    straight = train(ddgan_config(tiny_npz, steps=4), tmp_path / "a", progress=False)
    train(ddgan_config(tiny_npz, steps=2), tmp_path / "b", progress=False)
    resumed = train(ddgan_config(tiny_npz, steps=4), tmp_path / "b", resume=True, progress=False)
    full_a = ckpt.load_state(ckpt.state_path(tmp_path / "a", 4))
    full_b = ckpt.load_state(ckpt.state_path(tmp_path / "b", 4))
    for name in ("G", "D"):
        for k, v in full_a["method"]["modules"][name].items():
            assert torch.equal(v, full_b["method"]["modules"][name][k]), (name, k)
    a, _ = ckpt.load_model(straight)
    b, _ = ckpt.load_model(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_samples_with_only_its_path(run_dir):
    model = udpm.load(run_dir)
    assert model.config.method == "ddgan" and model.network.z_dim == 4
    betas = model.process.betas
    assert betas.dtype == torch.float64 and betas.numel() == 2  # API: β_1..β_T
    x = model.sample(3, seed=5)
    assert x.shape == (3, 3, 16, 16) and torch.equal(x, model.sample(3, seed=5))
    torch.testing.assert_close(model.sample(2, seed=6), x[1:], rtol=0, atol=1e-6)
    images, levels = model.sample(3, seed=5, return_levels=True)
    assert levels.shape == (3, 2, 3, 16, 16)  # x̂_0 of each of the T steps
    torch.testing.assert_close(images, x)


def test_explicit_latent_reproduces_seeded_samples(run_dir):
    from udpm.noise import seeded_noise

    model = udpm.load(run_dir)
    shapes = model.spec.latent_shapes(model, {})
    assert shapes == [(3, 16, 16), (4,), (3, 16, 16), (4,)]
    noises = seeded_noise(shapes, [7, 8])
    torch.testing.assert_close(model.sample(noises=noises), model.sample(2, seed=7))
    with pytest.raises(UDPMError, match="noise maps"):
        model.sample(noises=noises[:-1])


def test_sample_and_bench_from_the_command_line(run_dir, tmp_path):
    out = tmp_path / "png"
    assert main(["sample", "--checkpoint", str(run_dir), "--out", str(out), "--n", "3"]) == 0
    assert len(list(out.glob("*.png"))) == 3
    report = tmp_path / "bench.json"
    args = ["bench", "--checkpoint", str(run_dir), "--json", str(report)]
    assert main([*args, "--repeats", "1", "--batches", "1,2"]) == 0
    result = json.loads(report.read_text())
    assert result["nfe"] == 2 and result["method"] == "ddgan"  # NFE = T
    assert result["flops_ratio"] == pytest.approx(2, rel=0.05)  # T passes at full size


def test_presets_resolve_with_the_paper_recipe():
    cpu, paper = preset_config("emoji32-cpu-ddgan"), preset_config("cifar10-ddgan")
    assert cpu.network == preset_config("emoji32-cpu").network  # the CPU presets' U-Net
    for config in (cpu, paper):
        s = config.settings
        assert (s.T, s.z_dim, s.r1_gamma, s.lazy_r1) == (4, 100, 0.02, 15)
        assert (s.optim.lr, s.lr_d, s.optim.betas) == (1.6e-4, 1.25e-4, (0.5, 0.9))
    assert paper.batch_size == 256 and paper.network["channel_mult"] == [1, 2, 2, 2]


def test_train_with_method_ddgan_from_the_command_line(tmp_path, tiny_npz, capsys):  # noqa: F811
    common = ["train", "--data", str(tiny_npz), "--method", "ddgan", "--resolution", "16"]
    common += ["--batch-size", "4", "--steps", "1", "--no-progress", "--set", "T=2"]
    common += ["--set", "network.model_channels=8", "--set", "discriminator.model_channels=8"]
    assert main([*common, "--out", str(tmp_path / "run")]) == 0
    model = udpm.load(tmp_path / "run")
    assert model.config.method == "ddgan" and model.config.settings.T == 2
    assert model.config.settings.optim.betas == (0.5, 0.9)  # DDGAN's own optimiser
    code = main([*common, "--out", str(tmp_path / "bad"), "--set", "lazy_r1=0"])
    assert code == 1 and "lazy_r1 >= 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before the run directory is made
