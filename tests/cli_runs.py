"""Tiny `udpm train` command lines, run in forked children that can be killed for real.

A forked child starts in milliseconds (torch is imported already), so a test can kill
dozens of training processes. Kills are deterministic: ``UDPM_FAULT_AT=N`` makes the
child ``os._exit`` at the Nth phase of a checkpoint write (``udpm.train.faults``), and
``hook`` runs in the child before training, e.g. to send a signal at a chosen step.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import torch

from udpm import checkpoint as ckpt

# The tiny networks of test_train.TINY_G / TINY_D, as the command line sets them.
TINY_SET = [
    "network.model_channels=8",
    "network.channel_mult=[1, 2]",
    "network.num_blocks=1",
    "network.attn_resolutions=[]",
    "network.dropout=0.1",
    "network.resolution=8",
    "discriminator.model_channels=8",
    "discriminator.channel_mult=[1, 2]",
    "warmup=2",
    "ema_decay=0.9",
    "log_every=1",
    "sample_every=1000",
    "checkpoint_every=1",
    "keep=2",
]


def tiny_argv(data, out, *extra: str, steps: int | None = 4) -> list[str]:
    argv = ["train", "--data", str(data), "--out", str(out), "--no-progress"]
    # CPU even where CUDA exists: a forked child cannot use a parent's CUDA context, and
    # bitwise equality across a resume needs deterministic kernels.
    argv += ["--batch-size", "4", "--resolution", "16", "--device", "cpu"]
    argv += [] if steps is None else ["--steps", str(steps)]
    for item in TINY_SET:
        argv += ["--set", item]
    return argv + list(extra)


def run_child(argv: list[str], log: Path, env: dict | None = None, hook=None) -> int:
    """Run ``udpm`` with ``argv`` in a forked child; its exit status (stderr into ``log``)."""
    return wait(spawn(argv, log, env, hook))


def wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def spawn(argv: list[str], log: Path, env: dict | None = None, hook=None) -> int:
    """Start ``udpm ARGV`` in a forked child; its PID."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            from udpm.cli import main
            from udpm.train import faults

            os.environ.update(env or {})
            faults.reset()
            sys.stderr = open(log, "a", buffering=1)
            os.dup2(sys.stderr.fileno(), 2)
            if hook is not None:
                hook()
            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def final_state(run: Path, step: int) -> dict:
    """Networks, optimisers and EMA of a checkpoint, for an exact comparison."""
    state = ckpt.load_state(ckpt.state_path(run, step))
    return {"method": state["method"], "ema": state["ema"], "batches": state["batches"]}


def assert_equal_states(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_equal_states(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_states(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where
