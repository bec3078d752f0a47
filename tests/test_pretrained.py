"""The pretrained model shipped inside the package: loadable with no path, reproducible."""

import torch

import udpm
from udpm.checkpoint import read_meta
from udpm.cli import main
from udpm.pipeline import pretrained_path


def test_shipped_model_loads_and_samples_reproducibly():
    model = udpm.load()
    assert model.config.method == "udpm" and model.image_shape == (3, 32, 32)
    assert next(model.network.parameters()).dtype == torch.float32
    a = model.sample(6, seed=11)
    b = model.sample(6, seed=11, batch_size=4)  # batch size does not change the images
    assert a.shape == (6, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    # Equal up to float rounding (conv kernels may differ by batch size), far below 1/255.
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert not torch.allclose(a, model.sample(6, seed=12))


def test_shipped_model_is_self_describing():
    meta = read_meta(pretrained_path())
    assert meta["method"] == "udpm" and meta["step"] > 0 and meta["train_seconds"] > 0
    assert meta["config"]["data"] == "emoji32"
    assert pretrained_path().stat().st_size < 10e6  # fp16, a few MB


def test_sample_without_checkpoint_uses_the_shipped_model(tmp_path):
    assert main(["sample", "--out", str(tmp_path), "--n", "2"]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 2
