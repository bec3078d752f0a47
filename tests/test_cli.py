"""The command line: help for every command, one-line errors, and the main commands."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from udpm.cli import build_parser, main
from udpm.train.loop import train

from .test_train import tiny_config, tiny_npz  # noqa: F401  (fixture)


@pytest.fixture
def tiny_run(tmp_path, tiny_npz):  # noqa: F811
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, steps=2), out, progress=False)
    return out


def test_every_command_and_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "sample", "info", "demo", "eval", "bench"} <= set(sub.choices)
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"udpm {name} {action.option_strings} has no help"


def test_sample_is_reproducible_and_writes_pngs(tmp_path, tiny_run):
    for name in ("a", "b"):
        assert (
            main(
                [
                    "sample",
                    "--checkpoint",
                    str(tiny_run),
                    "--out",
                    str(tmp_path / name),
                    "--n",
                    "3",
                    "--seed",
                    "5",
                    "--grid",
                    "--levels",
                ]
            )
            == 0
        )
    files = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert len(files) == 5 and "grid.png" in files and "levels.png" in files
    for f in files:
        a = np.asarray(Image.open(tmp_path / "a" / f))
        b = np.asarray(Image.open(tmp_path / "b" / f))
        assert np.array_equal(a, b)


def test_info(tiny_run, capsys):
    assert main(["info", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert "method       udpm" in out and "2 steps" in out
    assert main(["info", str(tiny_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2


def test_bench_json_has_the_api_fields(tmp_path, tiny_run):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--checkpoint",
                str(tiny_run),
                "--json",
                str(out),
                "--repeats",
                "1",
                "--batches",
                "1,4",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    for key in (
        "nfe",
        "flops_per_image",
        "flops_full_resolution_pass",
        "flops_ratio",
        "ms_per_image_batch1",
        "sampler_overhead_fraction",
    ):
        assert key in result
    assert result["nfe"] == 3
    # Three passes at 1/4, 1/16 and 1/64 of the area: about a third of one full pass.
    assert 0.2 < result["flops_ratio"] < 0.45


def test_eval_on_a_folder_of_samples(tmp_path, capsys):
    from udpm.data import load_source, save_images
    from udpm.images import from_uint8

    images = from_uint8(load_source("emoji32").images[:64])
    save_images(images, tmp_path / "s")
    out = tmp_path / "eval.json"
    assert (
        main(["eval", "--samples", str(tmp_path / "s"), "--metrics", "fd,pr", "--json", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    assert result["n_fake"] == 64 and result["n_reference"] == 3781
    assert result["precision"] > 0.5 and "feature_net_hash" in result


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--checkpoint", "missing.safetensors", "--out", "x"], "checkpoint not found"),
        (["train", "--data", "nowhere.npz", "--out", "{tmp}/r"], "nowhere.npz"),
        (["train", "--resolution", "36", "--out", "{tmp}/r"], r"not divisible by 2\^3 = 8"),
        (["train", "--set", "bogus=1", "--out", "{tmp}/r"], "unknown config field"),
        (["eval", "--samples", "{tmp}/empty", "--n", "4"], "no images"),
        (["sample", "--n", "0", "--out", "{tmp}/o", "--checkpoint", "{tmp}"], "at least 1|no "),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith(f"udpm {argv[0]}: error:")

    assert re.search(message, err), err


def test_corrupt_image_is_named(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"not a png")
    code = main(["train", "--data", str(folder), "--out", str(tmp_path / "r"), "--steps", "1"])
    assert code == 1 and "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists() or not any(
        (tmp_path / "r" / "checkpoints").iterdir()
    )


def test_demo_draws_the_process(tmp_path, monkeypatch):
    import udpm.commands.demo as demo

    monkeypatch.setattr("udpm.pipeline.pretrained_path", _no_pretrained)
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "forward_process.png").is_file()
    assert (tmp_path / "posterior_draws.png").is_file()
    assert demo.HELP


def _no_pretrained():
    from udpm.errors import UDPMError

    raise UDPMError("no pretrained model in this test")


def test_nan_images_are_refused_by_eval():
    from udpm.errors import UDPMError
    from udpm.eval import compute_metrics

    with pytest.raises(UDPMError):
        compute_metrics(torch.full((4, 3, 32, 32), 5.0), "emoji32", metrics=("fd",))


def test_features_command_trains_a_loadable_network(tmp_path, capsys):
    from udpm.eval.features import feature_network_hash, load_feature_network

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    images = (rng.random((36, 16, 16, 3)) * 60 + labels[:, None, None, None] * 80).astype(np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images, labels=labels)
    out = tmp_path / "f.safetensors"
    common = ["features", "--data", str(tmp_path / "tiny.npz"), "--out", str(out), "--epochs", "1"]
    assert main([*common, "--widths", "8,x"]) == 1
    assert "udpm features: error: --widths" in capsys.readouterr().err and not out.exists()
    assert main([*common, "--widths", "8,16", "--batch-size", "16"]) == 0
    stdout = capsys.readouterr().out  # epoch lines, then the record as JSON
    info = json.loads(stdout[stdout.index("{") :])
    net = load_feature_network(out)
    assert net.config.widths == (8, 16) and net.config.num_classes == 3
    assert info["weights_sha256"] == feature_network_hash(net)


def test_eval_json_is_the_library_protocol(tmp_path, tiny_run, tiny_npz):  # noqa: F811
    import udpm
    from udpm.eval.protocol import evaluate, generate

    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(tiny_run), "--data", str(tiny_npz), "--n", "6"]
    assert main([*argv, "--seed", "3", "--metrics", "fd,pr", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    pipe = udpm.load(tiny_run)
    direct = evaluate(pipe, str(tiny_npz), n=6, seed=3, metrics=("fd", "pr"), progress=False)
    for result in (written, direct):
        del result["sampling_seconds"]
    assert json.loads(json.dumps(direct, default=str)) == written
    assert written["seeds"] == [3, 8] and written["n_reference"] == 12
    # The same images given as a tensor are measured the same: the protocol is the images.
    images, _ = generate(pipe, 6, seed=3, progress=False)
    assert evaluate(images, str(tiny_npz), metrics=("fd",))["fd"] == pytest.approx(direct["fd"])
