"""Training end to end on tiny data: sources, resume equality, NaN guard, run-dir safety."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import udpm
from udpm import checkpoint as ckpt
from udpm.config import Config, apply_overrides, flat_config, preset_config
from udpm.errors import UDPMError
from udpm.train.loop import Trainer, train

TINY_G = dict(
    model_channels=8,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[],
    dropout=0.1,
    resolution=8,
)
TINY_D = dict(model_channels=8, channel_mult=[1, 2])


def tiny_config(data, **kw) -> Config:
    values = dict(
        data=str(data),
        resolution=16,
        batch_size=4,
        steps=4,
        warmup=2,
        ema_decay=0.9,
        network=TINY_G,
        discriminator=TINY_D,
        log_every=1,
        sample_every=1000,
        checkpoint_every=2,
        keep=2,
    )
    if kw.get("method", "udpm") == "udpm":
        values["perceptual"] = "none"
    values.update(kw)
    return flat_config(**values)


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path, images=rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8), labels=np.arange(12) % 3
    )
    return path


def weights(path):
    state, meta = ckpt.load_model(path)
    return state, meta


def test_train_on_npz_writes_a_self_describing_run(tmp_path, tiny_npz):
    out = tmp_path / "run"
    last = train(tiny_config(tiny_npz), out, progress=False)
    assert last.name == "model-0000004.safetensors"
    assert (out / "config.yaml").is_file()
    records = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss_g"]) for r in records)
    assert ckpt.checkpoint_steps(out) == [2, 4]  # keep = 2
    model = udpm.load(out)
    assert model.meta["step"] == 4 and model.config.resolution == 16
    a, b = model.sample(3, seed=7), model.sample(3, seed=7)
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1


def test_train_on_folder_and_zip(tmp_path):
    folder = tmp_path / "imgs"
    for cls in ("cats", "dogs"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(folder / cls / f"{i}.png")
    train(tiny_config(folder, class_conditional=True, steps=2), tmp_path / "r1", progress=False)
    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in folder.rglob("*.png"):
            zf.write(p, p.relative_to(folder))
    train(tiny_config(archive, steps=2), tmp_path / "r2", progress=False)
    model = udpm.load(tmp_path / "r1")
    assert model.num_classes == 2
    assert model.sample(2, class_label=1).shape == (2, 3, 16, 16)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, tiny_npz):
    straight = tmp_path / "straight"
    train(tiny_config(tiny_npz, steps=6), straight, progress=False)
    chunked = tmp_path / "chunked"
    train(tiny_config(tiny_npz, steps=3, checkpoint_every=3), chunked, progress=False)
    train(tiny_config(tiny_npz, steps=6, checkpoint_every=3), chunked, resume=True, progress=False)
    assert "steps: 6\n" in (chunked / "config.yaml").read_text()  # the new target, not 3
    full_a = ckpt.load_state(ckpt.state_path(straight, 6))
    full_b = ckpt.load_state(ckpt.state_path(chunked, 6))
    for name in ("G", "D"):
        for k, v in full_a["method"]["modules"][name].items():
            assert torch.equal(v, full_b["method"]["modules"][name][k]), (name, k)
    for k, v in full_a["ema"].items():
        assert torch.equal(v, full_b["ema"][k]), k


def test_nan_loss_stops_cleanly_and_keeps_the_last_checkpoint(tmp_path, tiny_npz, monkeypatch):
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, steps=2), out, progress=False)
    before = ckpt.model_path(out, 2).read_bytes()
    trainer = Trainer(tiny_config(tiny_npz, steps=4), out, resume=True, progress=False)
    generator = trainer.method.generator
    with torch.no_grad():
        next(generator.parameters()).fill_(float("nan"))
    with pytest.raises(
        UDPMError,
        match=r"training stopped at step 2: .* became nan; the last "
        r"good checkpoint \(step 2\) is kept",
    ):
        trainer.run()
    assert ckpt.checkpoint_steps(out) == [2]
    assert ckpt.model_path(out, 2).read_bytes() == before


def test_run_directory_is_never_overwritten(tmp_path, tiny_npz):
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, steps=2), out, progress=False)
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    with pytest.raises(UDPMError, match=r"already holds a run \(checkpoint at step 2\); pass"):
        train(tiny_config(tiny_npz, steps=2), out, progress=False)
    with pytest.raises(UDPMError, match="holds no checkpoint to resume"):
        train(tiny_config(tiny_npz), tmp_path / "empty", resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


def test_bad_sizes_and_data_are_one_line_errors(tmp_path, tiny_npz):
    with pytest.raises(UDPMError, match=r"image size 20 is not divisible by 2\^3 = 8"):
        train(tiny_config(tiny_npz, resolution=20), tmp_path / "a", progress=False)
    with pytest.raises(UDPMError, match="batch size 64 exceeds the 12 images"):
        train(tiny_config(tiny_npz, batch_size=64), tmp_path / "b", progress=False)
    with pytest.raises(UDPMError, match="not found|does not exist|no such"):
        train(tiny_config(tmp_path / "missing.npz"), tmp_path / "c", progress=False)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_npz):
    out = tmp_path / "run"
    path = train(tiny_config(tiny_npz, steps=2), out, progress=False)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UDPMError, match="truncated"):
        udpm.load(broken)
    with pytest.raises(UDPMError, match="checkpoint not found"):
        udpm.load(tmp_path / "nope.safetensors")


def test_overrides_and_presets():
    config = apply_overrides(
        preset_config("emoji32-cpu"),
        ["ema_decay=0.5", "network.dropout=0.3", "alphas=[0.5, 0.3, 0.1]"],
    )
    assert config.ema_decay == 0.5 and config.network["dropout"] == 0.3
    assert config.settings.alphas == (0.5, 0.3, 0.1)
    with pytest.raises(UDPMError, match="unknown config field 'nope'"):
        apply_overrides(config, ["nope=1"])
    with pytest.raises(UDPMError, match="not of the form key=value"):
        apply_overrides(config, ["steps"])
    with pytest.raises(UDPMError, match="unknown preset"):
        preset_config("imagenet")
    paper = preset_config("cifar10")
    assert paper.optim.lr == 1e-4 and paper.batch_size == 64 and paper.steps == 600_000
    assert paper.settings.r1 == (0.025, 0.1, 0.4) and paper.discriminator["dropout"] == 0.4


def test_chunks_with_stop_at_equal_one_run_under_length_tied_schedules(tmp_path, tiny_npz):
    """--stop-at keeps the planned length, so cosine decay and annealed instance noise of a
    chunked run are those of one run; raising --steps per chunk would stretch them."""
    kw = dict(steps=6, decay="cosine", instance_noise_end=1e-3, r1_every=2, lambda_fm=(1, 1, 0))
    straight = train(tiny_config(tiny_npz, **kw), tmp_path / "a", progress=False)
    first = train(tiny_config(tiny_npz, **kw), tmp_path / "b", progress=False, stop_at=3)
    assert ckpt.load_model(first)[1]["step"] == 3
    cfg = tiny_config(tiny_npz, **kw)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False, stop_at=99)
    assert same_weights(straight, resumed)
    train(tiny_config(tiny_npz, **dict(kw, steps=3)), tmp_path / "c", progress=False)
    longer = train(tiny_config(tiny_npz, **kw), tmp_path / "c", resume=True, progress=False)
    assert not same_weights(longer, straight)  # the schedule changed at the resume
    with pytest.raises(UDPMError, match="stop-at"):
        train(tiny_config(tiny_npz, **kw), tmp_path / "d", progress=False, stop_at=0)


def same_weights(a, b) -> bool:
    wa, wb = ckpt.load_model(a)[0], ckpt.load_model(b)[0]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
