"""Training and sampling on several processes (torchrun + gloo on CPU) equal one process.

One torchrun launch of two processes runs :func:`worker` (this file as a module): it
trains with DDP and gradient accumulation, interrupts and resumes, samples sharded seeds
and provokes a config mismatch; the tests then compare its files with single-process
runs made here. With dropout 0 the runs see the same data and noise, so they differ only
in float rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import udpm
from udpm import checkpoint as ckpt
from udpm.errors import UDPMError
from udpm.train import distributed as dist
from udpm.train.loop import Trainer, train

from .test_train import TINY_D, TINY_G, tiny_config

ROOT = Path(__file__).resolve().parents[1]

# Every run: what differs from tiny_config (batch sizes are global).
RUNS = {
    # DDP + 2 micro-batches of 4 per rank; 4 keeps D's minibatch-std groups of one process.
    "accum": dict(batch_size=16, micro_batch=4, steps=3, class_conditional=True),
    "straight": dict(batch_size=8, steps=4),
    "ddpm": dict(method="ddpm", batch_size=8, micro_batch=2, steps=2, T=20),
    # Two micro-batches of 4 per rank; R1 on steps 0 and 2 (lazy, every 2 steps).
    "ddgan": dict(method="ddgan", batch_size=16, micro_batch=4, steps=3, T=2, z_dim=4, lazy_r1=2),
}


def config(data, name: str, **kw):
    values = dict(network=dict(TINY_G, dropout=0.0), discriminator=TINY_D, checkpoint_every=2)
    return tiny_config(data, **{**values, **RUNS[name], **kw})


def make_data(path: Path) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, 16, 16, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(32) % 3)
    return path


# --- the two-process side ------------------------------------------------------------


def worker(work: Path, data: Path) -> None:
    """Run under torchrun with two processes; writes what the tests compare."""
    from udpm.samplers.dispatch import sample_sharded

    torch.set_num_threads(1)
    context = dist.init_from_env("cpu")
    rank, world = context.rank, context.world_size
    report = {"world_size": world}
    for name in ("accum", "ddpm", "ddgan"):
        trainer = Trainer(
            config(data, name), work / name, progress=False, rank=rank, world_size=world
        )
        trainer.run()
        torch.save(trainer.method.state_dict()["modules"], work / f"{name}-rank{rank}.pt")
    # train(), as `udpm train` calls it, uses the process group it finds
    train(config(data, "straight"), work / "straight", progress=False)
    train(config(data, "straight", steps=2), work / "chunked", progress=False)
    train(config(data, "straight"), work / "chunked", resume=True, progress=False)
    images = sample_sharded(udpm.load(work / "straight"), 16, seed=0, batch_size=4)
    from udpm.cli import main

    args = ["sample", "--checkpoint", str(work / "straight"), "--out", str(work / "png")]
    assert main([*args, "--n", "5", "--batch-size", "2"]) == 0  # blocks of 2 and 3 seeds
    try:
        Trainer(
            config(data, "straight", lr=1e-4 * (rank + 1)),
            work / "bad",
            rank=rank,
            world_size=world,
        )
    except UDPMError as exc:
        report["mismatch"] = str(exc)
    if rank == 0:
        torch.save(images, work / "sharded.pt")
        (work / "report.json").write_text(json.dumps(report))
    dist.cleanup(context)
    finished(work, rank)


def finished(work: Path, rank: int) -> None:
    """Mark that ``rank`` did all its work and left the process group."""
    (work / f"finished-rank{rank}").touch()


# gloo tearing down at interpreter exit, after all the work; see dist.cleanup
TEARDOWN_ABORT = "terminate called without an active exception"


def launch_two(module: str, work: Path, data: Path) -> None:
    """``torchrun --nproc_per_node=2 -m MODULE WORK DATA`` with gloo; fails unless it worked.

    A launch whose every rank finished (see :func:`finished`) but that aborted in
    interpreter shutdown is reported as a warning, not a failure: the work under test is
    done and its files are complete. ``dist.cleanup`` makes that rare (0 of 40 launches,
    against 4 of 60 before it).
    """
    # this checkout first, whatever udpm the environment has installed
    pythonpath = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    for k in dist.ENV:
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", module, str(work), str(data)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode == 0:
        return
    done = all((work / f"finished-rank{r}").is_file() for r in (0, 1))
    assert done and TEARDOWN_ABORT in result.stderr, result.stderr[-4000:]
    warnings.warn(f"torchrun: a rank aborted in shutdown ({TEARDOWN_ABORT})", stacklevel=2)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The worker's directory after one torchrun launch of two gloo processes."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend")
    work = tmp_path_factory.mktemp("ddp")
    data = make_data(work / "data.npz")
    launch_two("tests.test_distributed", work, data)
    return work, data


# --- the tests ------------------------------------------------------------------------


def modules(run: Path, step: int) -> dict:
    return ckpt.load_state(ckpt.state_path(run, step))["method"]["modules"]


def assert_close(a: dict, b: dict, exact: bool = False) -> None:
    for name in a:
        for k, v in a[name].items():
            if exact:
                assert torch.equal(v, b[name][k]), (name, k)
            else:
                torch.testing.assert_close(v, b[name][k], rtol=1e-4, atol=1e-5, msg=f"{name}.{k}")


@pytest.mark.parametrize("name", ["accum", "ddpm", "ddgan"])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, two_processes, name):
    work, data = two_processes
    rank0, rank1 = (torch.load(work / f"{name}-rank{r}.pt") for r in (0, 1))
    assert_close(rank0, rank1, exact=True)  # DDP keeps the ranks bit-identical
    steps = RUNS[name]["steps"]
    single = config(data, name, micro_batch=None)  # one process, the whole batch at once
    train(single, tmp_path / "one", progress=False)
    assert_close(modules(tmp_path / "one", steps), modules(work / name, steps))
    ema_one, _ = ckpt.load_model(ckpt.model_path(tmp_path / "one", steps))
    ema_two, _ = ckpt.load_model(ckpt.model_path(work / name, steps))
    assert_close({"ema": ema_one}, {"ema": ema_two})


def test_resume_on_two_processes_continues_exactly(two_processes):
    work, _ = two_processes
    assert_close(modules(work / "straight", 4), modules(work / "chunked", 4), exact=True)
    state = ckpt.load_state(ckpt.state_path(work / "chunked", 4))
    assert len(state["rank_rngs"]) == 1  # rank 1's dropout stream is kept too
    records = (work / "straight" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records] == [1, 2, 3, 4]  # rank 0 alone logs


def test_sharded_sampling_equals_one_process(tmp_path, two_processes):
    from udpm.cli import main

    work, _ = two_processes
    images = udpm.load(work / "straight").sample(16, seed=0, batch_size=16)
    torch.testing.assert_close(torch.load(work / "sharded.pt"), images, rtol=0, atol=1e-6)
    args = ["sample", "--checkpoint", str(work / "straight"), "--out", str(tmp_path / "png")]
    assert main([*args, "--n", "5"]) == 0
    for k in range(5):
        name = f"seed{k:06d}.png"
        assert (work / "png" / name).read_bytes() == (tmp_path / "png" / name).read_bytes()


def test_ranks_that_disagree_on_the_config_fail_with_one_line(two_processes):
    work, _ = two_processes
    message = json.loads((work / "report.json").read_text())["mismatch"]
    assert "ranks disagree on the config: rank(s) 1 differ from rank 0" in message
    assert "lr" in message and "\n" not in message
    assert not (work / "bad").exists()  # nothing was written


def test_world_size_must_divide_the_batch():
    with pytest.raises(
        UDPMError, match=r"batch size 64 is not divisible by world size 3 × micro-batch 8"
    ):
        dist.BatchSplit(64, world_size=3, micro_batch=8)
    with pytest.raises(UDPMError, match="batch size 10 is not divisible by world size 4"):
        dist.BatchSplit(10, world_size=4)
    split = dist.BatchSplit(16, world_size=2, rank=1, micro_batch=4)
    x = torch.arange(16)
    parts = split.micro_parts(split.rank_part(x))
    assert split.accum_steps == 2
    assert [p[0].tolist() for p in parts] == [[1, 5, 9, 13], [3, 7, 11, 15]]


def test_missing_rendezvous_environment_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(UDPMError, match="MASTER_ADDR, MASTER_PORT not set; run under torchrun"):
        train(tiny_config(make_data(tmp_path / "d.npz")), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_micro_batches_equal_the_whole_batch_on_one_process(tmp_path):
    data = make_data(tmp_path / "d.npz")
    train(config(data, "straight", steps=2), tmp_path / "whole", progress=False)
    train(config(data, "straight", steps=2, micro_batch=4), tmp_path / "micro", progress=False)
    assert_close(modules(tmp_path / "whole", 2), modules(tmp_path / "micro", 2))


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
