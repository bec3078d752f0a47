"""DDPM, simple diffusion and DDGAN through the shared loop, checkpoints and sampling API."""

import json

import pytest
import torch

import udpm
from udpm import checkpoint as ckpt
from udpm.cli import main
from udpm.errors import UDPMError
from udpm.train.loop import train

from .test_train import tiny_config, tiny_npz  # noqa: F401  (fixture)


@pytest.mark.parametrize("method", ["ddpm", "simple"])
def test_baseline_trains_resumes_and_samples(tmp_path, tiny_npz, method):  # noqa: F811
    extra = {"T": 50} if method == "ddpm" else {}
    cfg = tiny_config(tiny_npz, method=method, steps=4, **extra)
    straight = train(cfg, tmp_path / "a", progress=False)
    half = tiny_config(tiny_npz, method=method, steps=2, **extra)
    train(half, tmp_path / "b", progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    a, _ = ckpt.load_model(straight)
    b, _ = ckpt.load_model(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = udpm.load(tmp_path / "a")
    assert model.config.method == method
    assert model.config.settings.parameterization == ("eps" if method == "ddpm" else "v")
    if method == "ddpm":  # API: discrete-time processes expose β_1..β_T in float64
        assert model.process.betas.dtype == torch.float64 and model.process.betas.numel() == 50
    x = model.sample(2, seed=3, steps=5)
    assert x.shape == (2, 3, 16, 16) and torch.equal(x, model.sample(2, seed=3, steps=5))
    y = model.sample(2, seed=3, sampler="ddim", steps=5, eta=0.0)
    assert y.shape == x.shape and not torch.equal(x, y)


def test_ddpm_samplers_from_the_command_line(tmp_path, tiny_npz, capsys):  # noqa: F811
    cfg = tiny_config(tiny_npz, method="ddpm", steps=2, T=20)
    train(cfg, tmp_path / "run", progress=False)
    for extra in (
        ["--sampler", "ancestral"],
        ["--sampler", "ddim", "--steps", "4", "--eta", "0.5"],
    ):
        out = tmp_path / f"png{len(extra)}"
        assert (
            main(
                [
                    "sample",
                    "--checkpoint",
                    str(tmp_path / "run"),
                    "--out",
                    str(out),
                    "--n",
                    "3",
                    *extra,
                ]
            )
            == 0
        )
        assert len(list(out.glob("*.png"))) == 3
    code = main(
        [
            "sample",
            "--checkpoint",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path / "x"),
            "--sampler",
            "ancestral",
            "--eta",
            "0.5",
        ]
    )
    assert code == 1 and "--eta applies to the ddim sampler only" in capsys.readouterr().err


def test_unknown_method_is_refused(tmp_path, tiny_npz):  # noqa: F811
    with pytest.raises(UDPMError, match="unknown method 'gan'"):
        train(tiny_config(tiny_npz, method="gan"), tmp_path / "r", progress=False)


def test_metrics_log_the_learning_rate_a_methods_own_schedule_set(tmp_path, tiny_npz):  # noqa: F811
    """DDGAN's cosine ends at lr_min, not 0: the log must show what the optimiser used."""
    from udpm.methods.ddgan import cosine_lr

    cfg = tiny_config(tiny_npz, method="ddgan", steps=4, warmup=0, lr=2e-3, decay="cosine",
                      lr_min=1e-3, T=2, z_dim=4, lazy_r1=1)  # fmt: skip
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["lr"]) for r in records if "lr" in r]
    assert logged and all(lr == pytest.approx(cosine_lr(s - 1, 4, 2e-3, 1e-3)) for s, lr in logged)
    assert logged[-1][1] > 1e-3  # the base schedule would have logged ~0.15 of lr here
