"""Run directories and checkpoints under damage: bit flips, full disks, leftovers, bad input.

Each test names the finding of issue 18 it covers. Kills, races and signals are in
``test_faults``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import udpm
from udpm import checkpoint as ckpt
from udpm.cli import main
from udpm.errors import UDPMError
from udpm.train.loop import train

from .cli_runs import assert_equal_states, final_state, tiny_argv
from .test_train import tiny_config, tiny_npz  # noqa: F401  (fixture)


def tiny(data, **kw):
    """test_train's tiny config, on the CPU (bitwise resume checks need its kernels)."""
    return tiny_config(data, device="cpu", **kw)


def one_line_error(capsys, command="train") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"udpm {command}: error: ") and "internal" not in err[0], err[0]
    return err[0]


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


# --- 3. checksums --------------------------------------------------------------------


def test_a_flipped_bit_anywhere_in_a_model_file_is_an_error_naming_it(tmp_path, tiny_npz):
    path = train(tiny(tiny_npz, steps=2), tmp_path / "run", progress=False)
    size = path.stat().st_size
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    for offset in (3, 40, header // 2, header - 40, header + 5, (header + size) // 2, size - 2):
        copy = tmp_path / f"flip{offset}.safetensors"
        shutil.copy(path, copy)
        flip_bit(copy, offset)
        with pytest.raises(UDPMError, match=f"{copy}.*(damaged|truncated|malformed|not a)"):
            udpm.load(copy)


def test_a_damaged_pair_is_moved_aside_and_resume_falls_back(tmp_path, tiny_npz, capsys):
    straight = tmp_path / "straight"
    train(tiny(tiny_npz, steps=6), straight, progress=False)
    run = tmp_path / "run"
    train(tiny(tiny_npz, steps=4), run, progress=False)  # pairs at 2 and 4
    state = ckpt.state_path(run, 4)
    flip_bit(state, state.stat().st_size // 2)
    with pytest.raises(UDPMError, match=f"training state {state} is damaged"):
        ckpt.load_state(state, ckpt.read_meta(ckpt.model_path(run, 4))["state_sha256"])
    capsys.readouterr()
    train(tiny(tiny_npz, steps=6), run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"checkpoint of step 4 is damaged (training state {state} is damaged" in err
    assert state.with_name(state.name + ".damaged").is_file()
    assert_equal_states(final_state(run, 6), final_state(straight, 6))


# --- 2. incomplete pairs, 9. temporary files -------------------------------------------


@pytest.mark.parametrize("missing", ["model", "state"])
def test_an_incomplete_pair_and_temp_files_are_skipped_and_removed(
    tmp_path, tiny_npz, capsys, missing
):
    run = tmp_path / "run"
    train(tiny(tiny_npz, steps=4), run, progress=False)
    gone = ckpt.model_path(run, 4) if missing == "model" else ckpt.state_path(run, 4)
    gone.unlink()
    temp = run / "checkpoints" / ".state-0000006.pt.x1y2z3.tmp"
    temp.write_bytes(b"\0" * 1000)
    capsys.readouterr()
    train(tiny(tiny_npz, steps=6), run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "removed 1 temporary file(s)" in err and not temp.exists()
    assert "skipped and removed the incomplete checkpoint of step 4" in err
    assert ckpt.complete_steps(run) == [4, 6]
    assert [json.loads(s)["step"] for s in (run / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


# --- 11. a full disk -----------------------------------------------------------------


@pytest.mark.parametrize("writer", ["save_file", "torch.save", "metrics"])
def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(
    tmp_path, tiny_npz, monkeypatch, capsys, writer
):
    run = tmp_path / "run"
    train(tiny(tiny_npz, steps=2), run, progress=False)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}

    def full(*args, **kwargs):
        if writer != "metrics":
            Path(args[1]).write_bytes(b"\0" * 100)  # part of the file got out
        raise OSError(errno.ENOSPC, "No space left on device")

    targets = {"save_file": "udpm.checkpoint.save_file", "torch.save": "torch.save"}
    monkeypatch.setattr(targets.get(writer, "udpm.train.logger.Logger.log"), full)
    argv = ["train", "--resume", "--out", str(run), "--steps", "4", "--no-progress"]
    assert main(argv) == 1
    line = one_line_error(capsys)
    assert "disk full" in line
    assert f"the last checkpoint (step 2) is intact in {run / 'checkpoints'}" in line
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    monkeypatch.undo()
    assert main(argv) == 0
    assert ckpt.complete_steps(run) == [2, 4]


# --- 5. and 8. resume intent, stored paths ----------------------------------------------


def test_resume_keeps_the_target_refuses_other_flags_and_names_the_method(
    tmp_path, tiny_npz, capsys
):
    run = tmp_path / "run"
    ddpm = ["--method", "ddpm", "--set", "T=20"]
    assert main(tiny_argv(tiny_npz, run, *ddpm, steps=2)) == 0
    capsys.readouterr()
    resume = ["train", "--out", str(run), "--resume", "--no-progress"]
    assert main(resume) == 0  # no --steps: the saved target, not the preset's 6000
    # The last line: the first ones say what training found and will do.
    assert capsys.readouterr().out.splitlines()[-1].startswith("trained ddpm to step 2:")
    assert main([*resume, "--lr", "0.001", "--seed", "3", "--set", "network.dropout=0.2"]) == 1
    line = one_line_error(capsys)
    assert (
        "network.dropout=0.2 (run: 0.1)" in line and "settings.optim.lr=0.001 (run: 0.0002)" in line
    )
    assert "seed=3 (run: 0)" in line
    assert main(tiny_argv(tiny_npz, run, *ddpm, "--resume", "--preset", "emoji32-cpu")) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("trained ddpm to step 4:")
    assert main([*resume, "--steps", "3"]) == 1
    assert "--steps 3 is below the run's step 4" in one_line_error(capsys)
    assert main([*resume, "--resolution", "32"]) == 1
    assert "resolution=32 (run: 16)" in one_line_error(capsys)
    assert ckpt.read_meta(ckpt.model_path(run, 4))["resolution"] == 16
    # CPU threads say how to run, not what: a resume on a bigger machine may change them.
    assert main([*resume, "--steps", "5", "--set", "threads=1"]) == 0
    assert ckpt.read_meta(ckpt.model_path(run, 5))["config"]["threads"] == 1


def test_data_paths_are_absolute_and_a_moved_copy_is_checked(
    tmp_path, tiny_npz, monkeypatch, capsys
):
    monkeypatch.chdir(tiny_npz.parent)
    run = tmp_path / "run"
    assert main(tiny_argv(tiny_npz.name, run, steps=2)) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == str(tiny_npz)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resume = ["train", "--out", str(run), "--resume", "--no-progress"]
    assert main([*resume, "--steps", "3"]) == 0
    moved = elsewhere / "moved.npz"
    tiny_npz.rename(moved)
    capsys.readouterr()
    assert main([*resume, "--steps", "4", "--data", "moved.npz"]) == 0
    assert "holds the run's images (SHA-256 match)" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == str(moved)
    other = elsewhere / "other.npz"
    np.savez(other, images=np.zeros((12, 16, 16, 3), np.uint8))
    assert main([*resume, "--steps", "5", "--data", str(other)]) == 1
    assert "does not hold the images this run was trained on" in one_line_error(capsys)
    assert ckpt.complete_steps(run)[-1] == 4


# --- 6. and 11. validation before anything is created -----------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps must be at least 1, got 0"),
        (["--steps", "-1"], "steps must be at least 1, got -1"),
        (["--batch-size", "0"], "batch_size must be at least 1, got 0"),
        (["--lr", "nan"], "the learning rate must be a positive number, got nan"),
        (["--lr", "-1"], "the learning rate must be a positive number, got -1.0"),
        (["--set", "lr=1e-5x"], "settings.optim.lr must be a number, got '1e-5x'"),
        (["--set", "ema_decay=2"], "ema_decay must lie in [0, 1), got 2.0"),
        (["--set", "checkpoint_every=0"], "checkpoint_every must be at least 1, got 0"),
        (["--device", "tpu7"], "unknown device 'tpu7'"),
        (["--data", "{tmp}/missing.npz"], "no such file or folder"),
        (["--set", "max_images=1"], "batch size 4 exceeds the 1 images"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, tiny_npz, capsys, extra, message):
    run = tmp_path / "run"
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert main(tiny_argv(tiny_npz, run, *extra)) == 1
    assert message in one_line_error(capsys)
    assert not run.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_creates_nothing(tmp_path, tiny_npz, capsys):
    assert main(tiny_argv(tiny_npz, tmp_path / "run", "--device", "cuda")) == 1
    assert "CUDA is not available" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_unusable_output_paths_are_one_line(tmp_path, tiny_npz, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in ((a_file, "is a file, not a run directory"), (a_file / "r", "is a file")):
        assert main(tiny_argv(tiny_npz, out)) == 1
        assert message in one_line_error(capsys)

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(tiny_argv(tiny_npz, tmp_path / "ro")) == 1
    line = one_line_error(capsys)
    assert "cannot write the run directory" in line and "Read-only file system" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_refused(tmp_path, tiny_npz, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(tiny_argv(tiny_npz, folder / "run")) == 1
        assert "not writable" in one_line_error(capsys)
    finally:
        folder.chmod(0o700)


def test_a_directory_without_a_checkpoint_is_reusable(tmp_path, tiny_npz, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: udpm\n")  # a start killed before step 1
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"st')
    assert main(tiny_argv(tiny_npz, run, "--resume", steps=2)) == 1
    assert "holds no checkpoint to resume; start it without --resume" in one_line_error(capsys)
    assert main(tiny_argv(tiny_npz, run, "--lr", "nan", steps=2)) == 1
    assert (run / "config.yaml").read_text() == "method: udpm\n"  # a failed start touches nothing
    capsys.readouterr()
    assert main(tiny_argv(tiny_npz, run, steps=2)) == 0
    steps = [json.loads(s)["step"] for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and ckpt.complete_steps(run) == [1, 2]


def test_malformed_metadata_is_one_line(tmp_path, tiny_npz, capsys):
    path = train(tiny(tiny_npz, steps=1), tmp_path / "run", progress=False)
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={"format": ckpt.FORMAT, "config": "{no"})
    for argv in (["info", str(bad)], ["sample", "--checkpoint", str(bad), "--out", "x"]):
        assert main(argv) == 1
        assert f"checkpoint {bad} has malformed metadata (field 'config')" in one_line_error(
            capsys, argv[0]
        )


def test_a_config_that_disagrees_with_its_checkpoint_is_refused(tmp_path, tiny_npz, capsys):
    run = tmp_path / "run"
    assert main(tiny_argv(tiny_npz, run, steps=1)) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "seed": 7}))  # another run's
    assert main(tiny_argv(tiny_npz, run, "--resume", "--seed", "7", steps=2)) == 1
    assert "disagrees with the checkpoint of step 1 on seed" in one_line_error(capsys)
