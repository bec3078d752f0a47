"""What a new user meets: eval on their own data, progress, outputs that never mix, keys."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from udpm.cli import main
from udpm.config import preset_config
from udpm.config.overrides import apply_overrides, config_keys, file_assignments, list_keys
from udpm.errors import UDPMError
from udpm.train.loop import train

from .test_train import tiny_config, tiny_npz  # noqa: F401  (fixture)


@pytest.fixture
def grey_npz(tmp_path):
    """12 grey 8-px images in 3 classes: another size and layout than any shipped set."""
    rng = np.random.default_rng(1)
    path = tmp_path / "grey.npz"
    np.savez(
        path, images=rng.integers(0, 255, (12, 8, 8), dtype=np.uint8), labels=np.arange(12) % 3
    )
    return path


@pytest.fixture
def grey_run(tmp_path, grey_npz):
    out = tmp_path / "grey-run"
    train(tiny_config(grey_npz, steps=1, channels=1, checkpoint_every=1), out, progress=False)
    return out


# --- eval on any data -----------------------------------------------------------------------


def test_grey_model_is_measured_against_its_data_at_its_shape(tmp_path, grey_run, grey_npz):
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(grey_run), "--data", str(grey_npz), "--n", "4"]
    assert main([*argv, "--metrics", "fd", "--no-progress", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_reference"] == 12 and result["n_fake"] == 4
    # Digits-like data measured with emoji features, at a tiny n: both said, in the record too.
    assert any("udpm features --data" in w for w in result["warnings"])
    assert any("n = 4 is small" in w for w in result["warnings"])


def test_eval_fails_before_sampling_when_the_reference_cannot_fit(tmp_path, grey_run, monkeypatch):
    import udpm.eval.protocol as protocol

    def never(*args, **kwargs):
        raise AssertionError("sampled before checking the reference")

    monkeypatch.setattr(protocol, "generate", never)
    missing = str(tmp_path / "nowhere.npz")
    assert main(["eval", "--checkpoint", str(grey_run), "--data", missing, "--n", "4"]) == 1


def test_feature_mismatch_names_every_alternative(tiny_npz):  # noqa: F811
    from udpm.eval.advice import warnings_for

    (warning,) = warnings_for(str(tiny_npz), "emoji32", (3, 16, 16), 5000)
    assert "trained on emoji32" in warning and "not on tiny" in warning
    for alternative in ("udpm features --data", "--metrics fid", "--feature-net pixels"):
        assert alternative in warning
    assert warnings_for("emoji32", "emoji32", (3, 32, 32), 5000) == []
    assert warnings_for(str(tiny_npz), "pixels", (3, 16, 16), 5000) == []


def test_a_feature_network_trained_on_the_data_is_not_warned_about(tmp_path, tiny_npz):  # noqa: F811
    from udpm.eval.advice import warnings_for

    net = tmp_path / "f.safetensors"
    argv = ["features", "--data", str(tiny_npz), "--out", str(net), "--epochs", "1"]
    assert main([*argv, "--widths", "8,16", "--batch-size", "8"]) == 0
    assert warnings_for(str(tiny_npz), net, (3, 16, 16), 5000) == []
    assert warnings_for(str(tiny_npz), net, (1, 32, 32), 5000) == []  # resized, same data
    # Other content under the same file name is other data.
    rng = np.random.default_rng(9)
    np.savez(tiny_npz, images=rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8))
    assert len(warnings_for(str(tiny_npz), net, (3, 16, 16), 5000)) == 1


def test_fd_floor_is_data_against_data_at_the_same_n():
    from udpm.eval.compute import fd_floor
    from udpm.eval.metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 4, generator=g)
    floor, n = fd_floor(real, 50, seed=3)
    order = torch.randperm(400, generator=torch.Generator().manual_seed(3))
    assert n == 50 and floor == pytest.approx(frechet_distance(real[order[50:]], real[order[:50]]))
    assert fd_floor(real, 1000)[1] == 200  # never more than half the reference
    # FD's bias shrinks with n (Chong and Forsyth 2020): so does the floor.
    assert fd_floor(real, 200)[0] < fd_floor(real, 10)[0]
    assert frechet_distance(real, torch.randn(50, 4, generator=g) + 1) > 5 * floor


def test_pixel_features_need_no_network_and_see_colour():
    from udpm.eval.features import PixelFeatures, feature_network_hash, load_feature_network

    net = load_feature_network("pixels")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert net(x).shape == (2, 3 * 8 * 8)
    assert torch.allclose(net(x), net(x.expand(-1, 3, -1, -1)))  # grey = RGB with equal channels
    assert feature_network_hash(PixelFeatures(4)) != feature_network_hash(PixelFeatures(8))
    with pytest.raises(UDPMError, match="pixels"):
        load_feature_network("nonsense")


# --- progress ---------------------------------------------------------------------------------


def test_eta_ignores_the_first_slow_steps(monkeypatch):
    import io

    from udpm import progress

    clock = iter([0.0, 100.0, 200.0] + [200.0 + k for k in range(1, 20)])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    p = progress.Progress("training", total=20, mode="lines", every=1e9, skip=2, stream=stream)
    for _ in range(10):
        p.update()
    # 2 warm-up steps of 100 s, then 1 s each: 10 steps left take 10 s, not 10 × 20 s.
    assert p.eta(208.0) == pytest.approx(10.0)


def test_sampling_reports_in_plain_lines(tiny_run_dir, capsys):
    import udpm

    udpm.load(tiny_run_dir).sample(3, progress="lines")
    out = capsys.readouterr().out
    assert "sampling: 3 calls in" in out and "\r" not in out


@pytest.fixture
def tiny_run_dir(tmp_path, tiny_npz):  # noqa: F811
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, steps=1, checkpoint_every=1), out, progress=False)
    return out


def test_sample_states_its_options_and_defaults(tmp_path, tiny_run_dir, capsys):
    argv = ["sample", "--checkpoint", str(tiny_run_dir), "--n", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("sampling 2 images from a udpm model")


# --- outputs never mix ------------------------------------------------------------------------


def test_sample_refuses_another_models_folder(tmp_path, tiny_run_dir, grey_run, capsys):
    out = tmp_path / "s"
    common = ["sample", "--n", "2", "--out", str(out)]
    assert main([*common, "--checkpoint", str(tiny_run_dir), "--save-latents"]) == 0
    assert main([*common, "--checkpoint", str(tiny_run_dir)]) == 0  # same model: fine
    capsys.readouterr()
    assert main([*common, "--checkpoint", str(grey_run)]) == 1
    assert "another model's outputs" in capsys.readouterr().err
    assert len(list(out.glob("*.latent.safetensors"))) == 2  # refused: nothing touched
    assert main([*common, "--checkpoint", str(grey_run), "--overwrite"]) == 0
    assert not list(out.glob("*.latent.safetensors"))  # no stale latents of the first model
    assert len(list(out.glob("*.png"))) == 2


def test_unknown_pngs_are_not_overwritten_silently(tmp_path, tiny_run_dir, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "mine.png").write_bytes(b"x")
    assert main(["sample", "--checkpoint", str(tiny_run_dir), "--n", "1", "--out", str(out)]) == 1
    assert "unknown origin" in capsys.readouterr().err and (out / "mine.png").exists()


# --- info, pipes, bench ------------------------------------------------------------------------


def test_info_on_a_state_file_points_to_the_model_file(tiny_run_dir, capsys):
    state = sorted((tiny_run_dir / "checkpoints").glob("state-*.pt"))[-1]
    assert main(["info", str(state)]) == 1
    err = capsys.readouterr().err
    assert "training state file" in err and "model-" in err and len(err.splitlines()) == 1


def test_info_says_how_the_classes_are_used(tiny_run_dir, capsys):
    assert main(["info", str(tiny_run_dir)]) == 0
    out = capsys.readouterr().out
    assert "unconditional" in out and "num_classes" not in out


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "udpm.cli", "info", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Closed before the JSON is written (what `| head` does once it has its lines): the
    # write must fail, whether or not the output would have fitted in the pipe's buffer.
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Error" not in err, err


def test_bench_report_gives_each_quantity_once_in_human_units():
    from udpm.commands.bench import flops_words, ms_words, report_lines

    result = {
        "method": "udpm", "image_shape": [3, 32, 32], "parameters": 1_930_000, "device": "cpu",
        "nfe": 3, "flops_per_image": 2.79e8, "flops_full_resolution_pass": 8.48e8,
        "flops_ratio": 0.329, "repeats": 5,
        "ms_per_image_batch1": 42.0, "ms_per_image_batch1_range": [40.0, 90.0],
        "sampler_overhead_fraction_batch1": 0.1, "sampler_overhead_fraction": 0.1,
    }  # fmt: skip
    text = "\n".join(report_lines(result))
    assert "0.279 GFLOPs" in text and "0.848 GFLOPs" in text and "42 ms" in text
    assert "range 40 ms to 90 ms" in text and "spread" in text  # 90 > 1.5 × 40
    assert text.count("outside network calls") == 1
    assert (flops_words(4.2e10), ms_words(0.5), ms_words(12_000)) == ("42 GFLOPs", "500 µs", "12 s")


# --- keys and config files ----------------------------------------------------------------------


def test_list_keys_round_trips_through_config(tmp_path, capsys):
    assert main(["train", "--list-keys", "--set", "lr=3e-4"]) == 0
    listed = capsys.readouterr().out
    assert yaml.safe_load(listed)["optim.lr"] == 3e-4
    path = tmp_path / "c.yaml"
    path.write_text(listed)
    config = apply_overrides(preset_config("emoji32-cpu"), file_assignments(path))
    assert list_keys(config) == listed


def test_config_file_nested_keys_merge_and_flags_win(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-3\nnetwork:\n  dropout: 0.3\nsteps: 7\n")
    assert main(["train", "--config", str(path), "--steps", "9", "--list-keys"]) == 0
    keys = yaml.safe_load(capsys.readouterr().out)
    assert keys["optim.lr"] == 1e-3 and keys["network.dropout"] == 0.3 and keys["steps"] == 9
    assert keys["network.model_channels"] == 32  # merged into the preset's network
    path.write_text("- a list\n")
    assert main(["train", "--config", str(path), "--list-keys"]) == 1
    assert "must map keys to values" in capsys.readouterr().err


def test_train_without_out_is_a_one_line_error(capsys):
    assert main(["train"]) == 1
    assert "udpm train: error:" in capsys.readouterr().err


def test_networks_follow_resolution_and_channels():
    base = preset_config("emoji32-cpu")
    keys = config_keys(apply_overrides(base, ["resolution=64", "channels=1"]))
    assert keys["network.image_channels"] == keys["discriminator.image_channels"] == 1
    assert keys["discriminator.resolution"] == 64
    ratio = 64 // base.resolution  # the U-Net's nominal sizes scale with the images
    assert keys["network.resolution"] == base.network["resolution"] * ratio
    assert keys["network.attn_resolutions"] == [r * ratio for r in base.network["attn_resolutions"]]
    explicit = apply_overrides(base, ["resolution=64", "network.resolution=16"])
    assert explicit.network["resolution"] == 16  # what is set explicitly stays


def test_latent_figures_come_labelled(tmp_path, tiny_run_dir):
    from PIL import Image

    out = tmp_path / "w"
    assert main(["swap", "1", "2", "--checkpoint", str(tiny_run_dir), "--out", str(out)]) == 0
    raw, figure = Image.open(out / "swap.png"), Image.open(out / "swap-figure.png")
    assert figure.size[0] > raw.size[0] and figure.size[1] > raw.size[1]  # room for labels


# --- training logs -------------------------------------------------------------------------------


def test_metrics_record_the_learning_rate_and_wall_time(tmp_path, tiny_npz, capsys):  # noqa: F811
    out = tmp_path / "run"
    config = tiny_config(tiny_npz, steps=4, warmup=4, lr=1e-3)
    train(config, out, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "lr" in r]
    # Linear warm-up over 4 steps: the lr of step s (0-based) is lr·(s + 1)/4.
    assert [r["lr"] for r in records] == pytest.approx([1e-3 * r["step"] / 4 for r in records])
    walls = [r["wall_seconds"] for r in records]
    assert walls == sorted(walls) and all("time" in r for r in records)
    # --no-progress: plain lines on stdout, a start line first; stderr stays for errors.
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("training udpm from scratch to step 4")
    assert any(line.startswith("train udpm: 1/4 steps") for line in lines)
    assert captured.err == ""


def test_sample_grids_reach_tensorboard_as_images():
    from udpm.train.logger import Logger

    class FakeWriter:
        def add_images(self, tag, images, step):
            self.seen = (tag, images, step)

    logger = Logger.__new__(Logger)
    logger.tb = FakeWriter()
    logger.images("samples", torch.linspace(-1, 1, 2 * 3 * 4 * 4).view(2, 3, 4, 4), 7)
    tag, images, step = logger.tb.seen
    assert (tag, step, images.shape) == ("samples", 7, (2, 3, 4, 4))
    assert images.min() == 0 and images.max() == 1  # [-1, 1] mapped to TensorBoard's [0, 1]
