"""VDM through the shared loop, model files, sampling, ``udpm eval --metrics bpd`` and bench."""

import json

import numpy as np
import pytest
import torch

import udpm
from udpm import checkpoint as ckpt
from udpm.cli import main
from udpm.config import preset_config
from udpm.errors import UDPMError
from udpm.eval.heldout import split_indices, write_split
from udpm.eval.likelihood import evaluate_bpd
from udpm.train.loop import train

from .test_train import tiny_config, tiny_npz  # noqa: F401  (fixture)

VDM = dict(method="vdm", schedule_features=16, sample_steps=4)


def test_vdm_trains_resumes_and_keeps_the_schedule_in_the_model_file(tmp_path, tiny_npz):  # noqa: F811
    cfg = tiny_config(tiny_npz, steps=4, **VDM)
    straight = train(cfg, tmp_path / "a", progress=False)
    train(tiny_config(tiny_npz, steps=2, **VDM), tmp_path / "b", progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    a, _ = ckpt.load_model(straight)
    b, _ = ckpt.load_model(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("schedule.shape_net.") for k in a)  # γ travels with ε̂
    model = udpm.load(tmp_path / "a")
    assert model.process.schedule is model.network.schedule  # bound to the EMA weights
    gamma_0, _ = model.network.schedule.ends()
    assert gamma_0.item() != pytest.approx(-13.3, abs=1e-9)  # learned through the bound


def test_sampling_is_deterministic_and_ends_on_8bit_values(tmp_path, tiny_npz):  # noqa: F811
    train(tiny_config(tiny_npz, steps=1, **VDM), tmp_path / "r", progress=False)
    model = udpm.load(tmp_path / "r")
    x = model.sample(3, seed=5, batch_size=2)
    assert x.shape == (3, 3, 16, 16) and torch.equal(x, model.sample(3, seed=5))
    k = (x.double() + 1) * 128 - 0.5  # bin centres (2k + 1)/256 - 1
    assert torch.allclose(k, k.round(), atol=1e-4)
    shapes = model.latent_shapes(steps=3)
    assert len(shapes) == 4  # z_1 and one map per step
    noises = [torch.randn(2, *s) for s in shapes]
    assert torch.equal(model.sample(noises=noises, steps=3), model.sample(noises=noises, steps=3))
    with pytest.raises(UDPMError, match="takes no option"):
        model.sample(1, sampler="ddim")


def test_bpd_eval_bench_and_sample_from_the_command_line(tmp_path, tiny_npz, capsys):  # noqa: F811
    train(tiny_config(tiny_npz, steps=1, **VDM), tmp_path / "r", progress=False)
    run, out = str(tmp_path / "r"), tmp_path / "bpd.json"
    assert main(["eval", "--checkpoint", run, "--data", str(tiny_npz), "--metrics", "bpd",
                 "--bpd-time-samples", "2", "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    terms = result["prior_bpd"] + result["reconstruction_bpd"] + result["diffusion_bpd"]
    assert result["bpd"] == pytest.approx(terms) and result["n_images"] == 12
    assert result["bpd"] > 8 - 3 * result["bpd_stderr"]  # random bytes: no bound below 8 bits
    bench = tmp_path / "bench.json"
    assert main(["bench", "--checkpoint", run, "--batches", "2", "--repeats", "1",
                 "--steps", "3", "--json", str(bench)]) == 0  # fmt: skip
    assert json.loads(bench.read_text())["nfe"] == 3
    assert main(["sample", "--checkpoint", run, "--out", str(tmp_path / "png"), "--n", "2",
                 "--steps", "3"]) == 0  # fmt: skip
    assert len(list((tmp_path / "png").glob("*.png"))) == 2


def test_ddpm_has_its_discrete_bound_and_simple_diffusion_none(tmp_path, tiny_npz, capsys):  # noqa: F811
    train(tiny_config(tiny_npz, method="ddpm", steps=1, T=20), tmp_path / "d", progress=False)
    out = tmp_path / "d.json"
    args = ["--metrics", "bpd", "--bpd-time-samples", "2", "--json", str(out)]
    assert main(["eval", "--checkpoint", str(tmp_path / "d"), "--data", str(tiny_npz), *args]) == 0
    result = json.loads(out.read_text())
    assert result["bound"] == "ddpm, T = 20" and result["bpd"] > 8 - 3 * result["bpd_stderr"]
    train(tiny_config(tiny_npz, method="simple", steps=1), tmp_path / "s", progress=False)
    code = main(["eval", "--checkpoint", str(tmp_path / "s"), "--data", str(tiny_npz),
                 "--metrics", "bpd"])  # fmt: skip
    assert code == 1 and "bpd needs a likelihood model" in capsys.readouterr().err


def test_bpd_is_reproducible_and_checks_the_image_shape(tmp_path, tiny_npz):  # noqa: F811
    train(tiny_config(tiny_npz, steps=1, **VDM), tmp_path / "r", progress=False)
    model = udpm.load(tmp_path / "r")
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    a = evaluate_bpd(model, images, time_samples=2, batch_size=2)
    b = evaluate_bpd(model, images, time_samples=2, batch_size=2)
    a.pop("bpd_seconds"), b.pop("bpd_seconds")
    assert a == b and a["n_images"] == 5
    with pytest.raises(UDPMError, match="images have shape"):
        evaluate_bpd(model, images[:, :, :8, :8])


def test_heldout_split_is_deterministic_disjoint_and_written_as_sources(tmp_path):
    train_idx, held = split_indices(3781)
    assert len(held) == 379 and len(train_idx) == 3402
    assert not set(train_idx.tolist()) & set(held.tolist())
    assert torch.equal(held, split_indices(3781)[1])
    rng = np.random.default_rng(0)
    src = tmp_path / "set.npz"
    np.savez(src, images=rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8))
    train_path, held_path = write_split(str(src), tmp_path / "split")
    with np.load(src) as full, np.load(train_path) as a, np.load(held_path) as b:
        assert len(a["images"]) == 18 and len(b["images"]) == 2
        whole = np.concatenate([a["images"], b["images"]])
        assert sorted(map(bytes, whole)) == sorted(map(bytes, full["images"]))


def test_presets_resolve():
    cifar = preset_config("cifar10-vdm")
    assert cifar.settings.optim.betas == (0.9, 0.99) and cifar.settings.optim.weight_decay == 0.01
    assert cifar.network["num_blocks"] == 32 and cifar.network["channel_mult"] == [1]
    assert preset_config("emoji32-cpu-vdm").method == "vdm"


def test_micro_batches_equal_the_whole_batch(tmp_path, tiny_npz):  # noqa: F811
    """Antithetic times, noise and the shape's variance gradient do not depend on the split."""

    from .test_train import TINY_G

    net = dict(TINY_G, dropout=0.0)
    whole = train(
        tiny_config(tiny_npz, steps=2, network=net, **VDM), tmp_path / "w", progress=False
    )
    micro = train(
        tiny_config(tiny_npz, steps=2, network=net, micro_batch=2, **VDM),
        tmp_path / "m",
        progress=False,
    )
    a, _ = ckpt.load_model(whole)
    b, _ = ckpt.load_model(micro)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
