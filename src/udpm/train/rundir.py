"""The run directory: one writer at a time, clean starts, and resumes that keep their intent.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``samples/``, ``checkpoints/``
and ``.lock``. The lock is an exclusive ``flock`` (POSIX advisory lock) held for the life
of the training process, so a second writer fails at once naming the holder's PID; the
kernel drops it when the process dies however it dies, so a stale lock never blocks.

:func:`open_run` takes the lock before anything is written and then tidies what an
interrupted process can leave: temporary files and incomplete checkpoint pairs. A
directory that holds no complete checkpoint is reusable by a new run.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from udpm import checkpoint as ckpt
from udpm.config import Config
from udpm.errors import UDPMError
from udpm.train.validate import check_out, os_error_line

LOCK = ".lock"
# Fields a resume may change; everything else would make the run a different one. CPU
# threads only say how to run it (a resume on a bigger machine may use more).
_MAY_CHANGE = ("steps", "data", "threads")


def note(message: str) -> None:
    print(f"udpm train: {message}", file=sys.stderr)


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``RUN/.lock``, which holds the owner's PID."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fd = Path(run_dir), None

    def acquire(self) -> None:
        path = self.run_dir / LOCK
        try:  # no O_TRUNC: the holder's PID must survive a failed attempt
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UDPMError(os_error_line(exc, f"the run directory {self.run_dir}")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            raise UDPMError(
                f"{self.run_dir} is in use by another udpm process (PID {holder}); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        # The file stays: unlinking it would let a waiter lock an inode nobody else sees.
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _holder_pid(fd: int, wait_s: float = 1.0) -> str:
    """The PID in a held lock file; the holder writes it just after its ``flock``, so a
    loser of a close race may look before it is there and waits for it briefly."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder or time.monotonic() > deadline:
            return holder or "unknown"
        time.sleep(0.01)


@dataclass
class Run:
    """An open run directory (rank 0's), with what the trainer needs to start or resume."""

    out: Path
    config: Config
    lock: RunLock
    created: bool  # this process made the directory, so a failed start may remove it
    resume_step: int | None = None
    data_moved: bool = False  # a resume with --data at a new path: check its content
    rewrite_config: bool = False  # a resume changed steps, threads or data: config.yaml says so
    data_sha256: str | None = None  # the data the run was trained on, from its checkpoint

    def commit(self, config: Config) -> None:
        """Write what a start writes, once data and networks have been checked."""
        try:
            (self.out / "checkpoints").mkdir(exist_ok=True)
            (self.out / "samples").mkdir(exist_ok=True)
            if self.resume_step is None or self.rewrite_config:
                text = config.to_yaml()
                ckpt.atomic_write(self.out / "config.yaml", lambda t: Path(t).write_text(text))
            if self.resume_step is not None:
                trim_metrics(self.out, self.resume_step)
        except OSError as exc:
            raise UDPMError(os_error_line(exc, f"the run directory {self.out}")) from None

    def abandon(self) -> None:
        """After a failed start: leave nothing behind that this process created.

        Only the lock holder removes anything: a process that lost the race for the lock
        may have made the directory, but the winner is using it.
        """
        if self.lock.fd is not None and self.created and not ckpt.checkpoint_steps(self.out):
            shutil.rmtree(self.out, ignore_errors=True)
        self.lock.release()


def open_run(out: Path, config: Config, resume, explicit: set[str] | None = None) -> Run:
    """Lock ``out`` and decide the run's config: a new run's, or the resumed run's.

    Args:
        resume: True to continue the run in ``out``, False for a new run, ``"auto"`` to
            resume when ``out`` holds a checkpoint and start otherwise (for requeued jobs).
        explicit: the config fields the user set (dotted for nested ones); on resume those
            must agree with the saved config, except ``steps`` and a moved ``data`` path.
            None means every field of ``config``.
    """
    out = Path(out)
    check_out(out)
    try:
        out.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise UDPMError(os_error_line(exc, f"the run directory {out}")) from None
    run = Run(out, config, RunLock(out), created)
    try:
        run.lock.acquire()
        remove_temp_files(out)
        complete = ckpt.complete_steps(out)
        if resume == "auto":
            resume = bool(complete)
        remove_incomplete_pairs(out, complete)
        if resume:
            _resume(run, config, explicit)
        elif complete:
            raise UDPMError(
                f"{out} already holds a run (checkpoint at step {complete[-1]}); "
                "pass --resume or choose another --out"
            )
        else:
            _reuse(out)
            run.config = dataclasses.replace(config, data=absolute_data(config.data))
    except BaseException:
        run.abandon()
        raise
    return run


def _resume(run: Run, given: Config, explicit: set[str] | None) -> None:
    saved = read_saved_config(run.out)
    step, meta = newest_intact(run.out)
    _check_agree(saved, meta, run.out / "config.yaml", step)
    config, moved = merge_intent(saved, given, explicit)
    if config.steps < step:
        raise UDPMError(f"--resume: --steps {config.steps} is below the run's step {step}")
    run.config, run.resume_step, run.data_moved = config, step, moved
    run.rewrite_config = config != saved  # so a reader of config.yaml sees the new target
    run.data_sha256 = meta.get("data_sha256")


def read_saved_config(out: Path) -> Config:
    config_file = out / "config.yaml"
    if not config_file.is_file() or not ckpt.complete_steps(out):
        raise UDPMError(
            f"--resume: {out} holds no checkpoint to resume; start it without --resume "
            "(a run directory without a checkpoint is reused)"
        )
    try:
        values = yaml.safe_load(config_file.read_text())
        return Config.from_dict(values)
    except (yaml.YAMLError, TypeError, AttributeError) as exc:
        raise UDPMError(f"{config_file} is malformed ({type(exc).__name__})") from None


def newest_intact(out: Path) -> tuple[int, dict]:
    """The newest checkpoint whose two checksums hold; damaged ones are moved aside."""
    for step in reversed(ckpt.complete_steps(out)):
        try:
            _, meta = ckpt.load_model(ckpt.model_path(out, step))
            ckpt.verify_state(out, step, meta)
            return step, meta
        except UDPMError as exc:
            for path in (ckpt.model_path(out, step), ckpt.state_path(out, step)):
                path.rename(path.with_name(path.name + ".damaged"))
            note(f"checkpoint of step {step} is damaged ({exc}); moved it aside as *.damaged")
    raise UDPMError(f"--resume: no intact checkpoint left in {out / 'checkpoints'}")


def _check_agree(saved: Config, meta: dict, config_file: Path, step: int) -> None:
    """``config.yaml`` must describe the weights it sits beside (two writers broke that)."""
    mine, theirs = _flatten(saved.to_dict()), _flatten(meta.get("config", {}))
    differ = [k for k in sorted(set(mine) | set(theirs)) if k not in _MAY_CHANGE]
    differ = [k for k in differ if mine.get(k, "unset") != theirs.get(k, "unset")]
    if differ:
        raise UDPMError(
            f"--resume: {config_file} disagrees with the checkpoint of step {step} on "
            f"{', '.join(differ[:5])}; was the directory written by two runs?"
        )


def merge_intent(saved: Config, given: Config, explicit: set[str] | None) -> tuple[Config, bool]:
    """The saved config with ``steps`` and ``data`` taken from ``given`` where explicit.

    Raises on any other explicit field that differs, listing them all.
    """
    mine, theirs = _flatten(given.to_dict()), _flatten(saved.to_dict())
    chosen = [k for k in sorted(set(mine) | set(theirs)) if _chosen(k, explicit)]
    differ = [
        k for k in chosen if k not in _MAY_CHANGE and mine.get(k, "unset") != theirs.get(k, "unset")
    ]
    if differ:
        listed = ", ".join(f"{k}={mine.get(k)!r} (run: {theirs.get(k)!r})" for k in differ)
        raise UDPMError(
            f"--resume: refusing settings that differ from the run's config: {listed}; "
            "a resumed run keeps its config (only --steps, threads and a moved --data may change)"
        )
    changes = {}
    for key in ("steps", "threads"):
        if _chosen(key, explicit):
            changes[key] = getattr(given, key)
    data = absolute_data(given.data)
    moved = _chosen("data", explicit) and data != saved.data
    if moved:
        changes["data"] = data
    return dataclasses.replace(saved, **changes), moved


def _chosen(key: str, explicit: set[str] | None) -> bool:
    if explicit is None:
        return True
    return any(key == e or key.startswith(e + ".") or e.startswith(key + ".") for e in explicit)


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in values.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def absolute_data(data: str) -> str:
    """An existing path made absolute, so a resume from elsewhere finds it; names stay."""
    path = Path(str(data)).expanduser()
    return os.path.abspath(path) if path.exists() else str(data)


def data_digest(images, labels) -> str:
    """SHA-256 of the decoded images (and labels): the same data, wherever it lives."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    if labels is not None:
        h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def check_moved_data(run: Run, digest: str) -> None:
    """A resume with a new ``--data`` path is applied only if the images are the same."""
    if not run.data_moved:
        return
    if run.data_sha256 is None or run.data_sha256 != digest:
        raise UDPMError(
            f"--resume: --data {run.config.data} does not hold the images this run was "
            "trained on (their SHA-256 differs or the checkpoint records none)"
        )
    note(f"data moved: {run.config.data} holds the run's images (SHA-256 match); using it")


# --- tidying -----------------------------------------------------------------------------


def remove_temp_files(out: Path) -> None:
    """Temporary files of writes that a kill interrupted (``atomic_write`` leaves them)."""
    found = [p for d in (out, out / "checkpoints") if d.is_dir() for p in d.iterdir()]
    temps = [p for p in found if ckpt.TEMP.match(p.name) and p.is_file()]
    for p in temps:
        p.unlink(missing_ok=True)
    if temps:
        note(f"removed {len(temps)} temporary file(s) left by an interrupted write")


def remove_incomplete_pairs(out: Path, complete: list[int]) -> None:
    """A model or state file without its partner: an interrupted checkpoint or prune."""
    models, states = ckpt.checkpoint_steps(out), ckpt.state_steps(out)
    for step in sorted(set(models) | set(states)):
        if step in complete:
            continue
        ckpt.model_path(out, step).unlink(missing_ok=True)
        ckpt.state_path(out, step).unlink(missing_ok=True)
        note(f"skipped and removed the incomplete checkpoint of step {step}")


def _reuse(out: Path) -> None:
    """A directory without a checkpoint: drop the logs of the start that never got one."""
    for name in ("config.yaml", "metrics.jsonl"):
        (out / name).unlink(missing_ok=True)
    for grid in (out / "samples").glob("step-*.png") if (out / "samples").is_dir() else []:
        grid.unlink()


def trim_metrics(out: Path, step: int) -> None:
    """Keep the records up to ``step``, so a resumed run logs no step twice."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a kill
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("step"), int)
            and record["step"] <= step
        ):
            kept.append(line + "\n")
    ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))
