"""Training survives what a cluster does to it: kills at every write, races, signals.

Training processes are forked children of the test (see ``cli_runs``) and are killed for
real (``os._exit``, no cleanup), at deterministic points of the checkpoint writer.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import threading

import numpy as np
import pytest
import yaml

from udpm import checkpoint as ckpt
from udpm.cli import main
from udpm.errors import UDPMError
from udpm.train.faults import FAULT_EXIT
from udpm.train.loop import Trainer
from udpm.train.preempt import EXIT_PREEMPTED
from udpm.train.rundir import RunLock

from .cli_runs import assert_equal_states, final_state, run_child, spawn, tiny_argv, wait

STEPS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """An uninterrupted run of STEPS steps, and one of STEPS + 2 (for the resumes)."""
    work = tmp_path_factory.mktemp("straight")
    for steps in (STEPS, STEPS + 2):
        assert main(tiny_argv(data, work / str(steps), steps=steps)) == 0
    return work


def metrics_steps(run) -> list[int]:
    return [json.loads(s)["step"] for s in (run / "metrics.jsonl").read_text().splitlines()]


def leftovers(run) -> list[str]:
    """Temporary files, and model or state files without their partner."""
    names = [p.name for d in (run, run / "checkpoints") if d.is_dir() for p in d.iterdir()]
    temps = [n for n in names if n.endswith(".tmp")]
    pairs = set(ckpt.checkpoint_steps(run)) ^ set(ckpt.state_steps(run))
    return temps + [f"unpaired step {s}" for s in sorted(pairs)]


def test_killed_at_every_write_phase_resumes_to_the_uninterrupted_run(tmp_path, data, straight):
    """Kill N: die at the Nth write phase (partial file, written, renamed, mid-prune)."""
    reference = final_state(straight / str(STEPS), STEPS)
    seen = {"temp file": 0, "state without model": 0, "no checkpoint yet": 0}
    n = 0
    while True:
        n += 1
        run, log = tmp_path / f"kill{n}", tmp_path / f"kill{n}.log"
        argv = tiny_argv(data, run, "--auto-resume", steps=STEPS)
        code = run_child(argv, log, env={"UDPM_FAULT_AT": str(n)})
        if code == 0:  # N is past the last write phase of a whole run
            break
        assert code == FAULT_EXIT, log.read_text()
        names = [p.name for p in (run / "checkpoints").glob("*")] if run.is_dir() else []
        seen["temp file"] += any(s.endswith(".tmp") for s in leftovers(run))
        seen["state without model"] += bool(
            set(ckpt.state_steps(run)) - set(ckpt.checkpoint_steps(run))
        )
        seen["no checkpoint yet"] += not any(s.startswith("model-") for s in names)
        # The same command again, as a requeued job would run it.
        assert main(argv) == 0, f"resume after kill {n}"
        assert_equal_states(final_state(run, STEPS), reference, f"kill {n}")
        assert metrics_steps(run) == list(range(1, STEPS + 1)), f"kill {n}"
        assert leftovers(run) == [], f"kill {n}"
    assert n > 20, f"only {n - 1} kill points"
    assert all(seen.values()), seen


def test_killed_while_a_resume_tidies_the_log_still_resumes_exactly(tmp_path, data, straight):
    """A resume rewrites metrics.jsonl first (dropping steps past its checkpoint): kill it there."""
    reference = final_state(straight / str(STEPS), STEPS)
    base = tmp_path / "base"
    argv = tiny_argv(data, base, "--auto-resume", steps=STEPS)
    assert run_child(argv, tmp_path / "log", env={"UDPM_FAULT_AT": "12"}) == FAULT_EXIT
    assert metrics_steps(base) == [1, 2]  # logged step 2, died writing its checkpoint
    for n in (1, 2, 3):  # the tidy-up's write: partial, written, renamed
        run = tmp_path / f"resume{n}"
        shutil.copytree(base, run)
        argv = tiny_argv(data, run, "--auto-resume", steps=STEPS)
        assert run_child(argv, tmp_path / "log", env={"UDPM_FAULT_AT": str(n)}) == FAULT_EXIT
        assert main(argv) == 0
        assert_equal_states(final_state(run, STEPS), reference, f"kill {n}")
        assert metrics_steps(run) == list(range(1, STEPS + 1)), f"kill {n}"
        assert leftovers(run) == [], f"kill {n}"


def test_two_writers_race_and_exactly_one_proceeds(tmp_path, data):
    for trial in range(2):
        run = tmp_path / f"race{trial}"
        read, write = os.pipe()

        def wait_for_go(read=read):
            os.read(read, 1)  # both children start training at once

        logs = [tmp_path / f"race{trial}-{k}.log" for k in range(2)]
        pids = [spawn(tiny_argv(data, run, steps=2), log, hook=wait_for_go) for log in logs]
        os.write(write, b"go")
        codes = [wait(pid) for pid in pids]
        os.close(read), os.close(write)
        assert sorted(codes) == [0, 1], codes
        loser = logs[codes.index(1)].read_text().strip().splitlines()
        assert len(loser) == 1, loser
        assert re.search(
            r"in use by another udpm process \(PID \d+\)|already holds a run", loser[0]
        )
        meta = ckpt.read_meta(ckpt.model_path(run, 2))
        assert meta["config"] == yaml.safe_load((run / "config.yaml").read_text())


def test_a_held_lock_names_its_pid_and_a_dead_holder_never_blocks(tmp_path, data):
    run = tmp_path / "run"
    assert main(tiny_argv(data, run, steps=1)) == 0
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # another process holds the run, then dies without cleaning up
        RunLock(run).acquire()
        os.write(ready_w, b"1")
        signal.pause()
        os._exit(0)
    os.read(ready_r, 1)
    try:
        for argv in (tiny_argv(data, run, "--resume", steps=2), tiny_argv(data, run, steps=2)):
            with pytest.raises(Exception, match=rf"in use by another udpm process \(PID {pid}\)"):
                Trainer_from_cli(argv)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert (run / ".lock").read_text().strip() == str(pid)  # stale, and harmless:
    assert main(tiny_argv(data, run, "--resume", steps=2)) == 0
    assert ckpt.complete_steps(run)[-1] == 2


def test_a_loser_that_looks_before_the_holder_writes_its_pid_still_names_it(tmp_path):
    """The holder writes its PID just after its flock; a loser in between waits for it."""
    (tmp_path / ".lock").touch()
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, PID not yet written
    late = threading.Timer(0.2, lambda: os.write(fd, b"4242\n"))
    late.start()
    try:
        with pytest.raises(UDPMError, match=r"in use by another udpm process \(PID 4242\)"):
            RunLock(tmp_path).acquire()
    finally:
        late.join()
        os.close(fd)


def Trainer_from_cli(argv):
    """The Trainer that ``udpm train ARGV`` builds (it takes the lock)."""
    from udpm.cli import build_parser
    from udpm.commands.train import build_config

    args = build_parser().parse_args(argv)
    config, explicit = build_config(args)
    resume = "auto" if args.auto_resume else args.resume
    return Trainer(config, args.out, resume=resume, progress=False, explicit=explicit)


def signal_at_step(signum: int, step: int, times: int = 1):
    """Patch the loop so that this process gets ``signum`` during step ``step``."""
    original = Trainer._one_step

    def one_step(self):
        if self.step == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(self)

    Trainer._one_step = one_step


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT", "SIGUSR1"])
def test_a_stop_signal_saves_the_current_step_and_resumes_exactly(
    tmp_path, data, straight, monkeypatch, capsys, name
):
    run = tmp_path / "run"
    monkeypatch.setattr(Trainer, "_one_step", Trainer._one_step)  # undone after the test
    signal_at_step(getattr(signal, name), step=1)
    argv = tiny_argv(data, run, "--set", "checkpoint_every=1000", steps=STEPS + 2)
    assert main(argv) == EXIT_PREEMPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"udpm train: stopped by {name} at step 2; its checkpoint is saved in "
        f"{run / 'checkpoints'}; continue with --resume"
    ]
    assert ckpt.complete_steps(run) == [2]
    monkeypatch.undo()
    resume = tiny_argv(data, run, "--resume", "--set", "checkpoint_every=1000", steps=None)
    assert main(resume) == 0  # no --steps: the saved target
    expected = final_state(straight / str(STEPS + 2), STEPS + 2)
    assert_equal_states(final_state(run, STEPS + 2), expected)
    assert metrics_steps(run) == list(range(1, STEPS + 3))


def test_a_second_signal_exits_at_once_keeping_the_last_checkpoint(tmp_path, data, straight):
    run, log = tmp_path / "run", tmp_path / "log"
    argv = tiny_argv(data, run, "--set", "checkpoint_every=2", steps=STEPS + 2)
    code = run_child(argv, log, hook=lambda: signal_at_step(signal.SIGTERM, step=2, times=2))
    assert code == 128 + signal.SIGTERM
    assert "second stop signal (SIGTERM): exiting at once" in log.read_text()
    assert ckpt.complete_steps(run) == [2]
    assert main([*argv, "--resume"]) == 0
    expected = final_state(straight / str(STEPS + 2), STEPS + 2)
    assert_equal_states(final_state(run, STEPS + 2), expected)
