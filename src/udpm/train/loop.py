"""The training loop shared by every method: data, warm-up, EMA, logs, grids, checkpoints.

The run directory (see ``train.rundir``) is locked for the life of the run; checkpoints
are atomic, checksummed pairs (``udpm.checkpoint``). ``resume=True`` continues from the
newest intact checkpoint exactly: the weights, optimisers, EMA, step and every random
generator are restored. SIGTERM, SIGINT and SIGUSR1 save the current step and stop
(``train.preempt``).

Under ``torchrun`` (see ``train.distributed``) every process runs the same loop on its
part of each global batch: rank 0 alone writes the run directory, the others take its
config and checkpoints through collectives, and a failure on one rank stops them all.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from udpm import checkpoint as ckpt
from udpm.config import Config
from udpm.data.batches import Batches
from udpm.data.guards import MAX_PIXELS
from udpm.device import autocast_dtype, resolve_device
from udpm.errors import UDPMError
from udpm.methods import get_method, get_spec
from udpm.methods.base import NonFiniteLoss
from udpm.train import distributed as dist
from udpm.train import rundir, snapshot
from udpm.train.ema import EMA
from udpm.train.logger import Logger
from udpm.train.preempt import Preempted, StopSignals
from udpm.train.report import TrainReport
from udpm.train.validate import check_config, os_error_line

__all__ = ["Batches", "Trainer", "autocast_dtype", "resolve_device", "train"]


class Trainer:
    """Runs ``config.steps`` steps of ``config.method`` and writes the run directory.

    ``resume`` is True, False or ``"auto"`` (resume if ``out`` holds a checkpoint);
    ``explicit`` names the config fields the user set, for :func:`rundir.merge_intent`.
    ``stop_at`` ends this invocation at that step (saved) without changing the run's
    planned length: warm-up, cosine decay and annealed instance noise follow
    ``config.steps``, so a run trained in chunks equals one trained at once.
    """

    def __init__(
        self,
        config: Config,
        out: Path,
        resume: bool | str = False,
        progress: bool = True,
        rank: int = 0,
        world_size: int = 1,
        explicit: set[str] | None = None,
        compile: bool = False,
        stop_at: int | None = None,
    ):
        if stop_at is not None and stop_at < 1:
            raise UDPMError(f"--stop-at must be a positive step, got {stop_at}")
        self.stop_at = stop_at
        self.out, self.progress = Path(out), progress
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        if world_size != dist.world_size():
            raise UDPMError(
                f"world_size={world_size} but the process group has {dist.world_size()}; "
                "call udpm.train.train under torchrun, which sets up the group"
            )
        get_spec(config.method).validate(config)
        check_config(config)  # before anything is created
        resolve_device(config.device)
        dist.BatchSplit(config.batch_size, world_size, rank, config.micro_batch)  # fail early
        dist.check_same(
            {"config": config.to_dict(), "udpm": _version(), "torch": torch.__version__}
        )
        self.run_dir = None  # rank 0's open (locked) run directory
        try:
            self._start(config, resume, explicit, compile)
        except BaseException:
            if self.run_dir is not None:
                self.run_dir.abandon()
            raise

    def _start(self, config: Config, resume, explicit, compile: bool = False) -> None:
        # Rank 0 locks the run directory and decides the config; all ranks take it.
        cfg, step = dist.together(
            lambda: self._open(config, resume, explicit), main_only=True, share=True
        )
        self.config = cfg
        self.device = dist.local_device(resolve_device(cfg.device))
        self.split = dist.BatchSplit(cfg.batch_size, self.world_size, self.rank, cfg.micro_batch)
        self.data = dist.together(lambda: self._load_data(cfg))  # each rank reads its copy
        dist.check_same({"images": list(self.data.images.shape)}, what="data")
        self.data_sha256 = None  # rank 0's, for the checkpoints
        dist.together(self._hash_data, main_only=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # Every rank builds the same initial networks; then each draws its own dropout
        # masks (rank 0 goes on with the stream of a single-process run).
        torch.manual_seed(cfg.seed)
        method_cls = get_method(cfg.method)
        self.method = method_cls(
            cfg, self.device, self.num_classes, autocast_dtype(cfg.amp, self.device)
        )
        self.method.distribute(self.split)
        if compile:  # G's training forward through torch.compile; weights stay shared
            from udpm.accel import compile_network

            self.method.nets["G"] = compile_network(self.method.net("G"))
        if self.rank:
            torch.manual_seed(cfg.seed + self.rank)
        self.ema = EMA(self.method.generator, cfg.ema_decay)
        self.batches = Batches(
            self.data.images,
            self.data.labels if cfg.class_conditional else None,
            cfg.batch_size,
            cfg.hflip,
            cfg.seed + 12345,
        )
        self.step, self.train_seconds, self.saved_step = 0, 0.0, None
        dist.together(lambda: self.run_dir.commit(cfg), main_only=True)  # all checks passed
        if step is not None:
            dist.together(lambda: snapshot.restore(self, step))

    def _hash_data(self) -> None:
        self.data_sha256 = rundir.data_digest(self.data.images, self.data.labels)
        rundir.check_moved_data(self.run_dir, self.data_sha256)

    def _open(self, config: Config, resume, explicit) -> tuple[Config, int | None]:
        self.run_dir = rundir.open_run(self.out, config, resume, explicit)
        return self.run_dir.config, self.run_dir.resume_step

    def _load_data(self, cfg: Config):
        from udpm.data import load_source

        data = load_source(
            cfg.data,
            resolution=cfg.resolution,
            channels=cfg.channels,
            max_images=cfg.max_images,
            max_pixels=getattr(cfg, "max_pixels", MAX_PIXELS),
        )
        self.num_classes = data.num_classes if cfg.class_conditional else 0
        if cfg.class_conditional and not self.num_classes:
            raise UDPMError(f"class_conditional is set but {cfg.data} has no labels")
        return data

    # --- checkpoints (train.snapshot) ---------------------------------------------------

    def save(self) -> None:
        """Write a checkpoint from rank 0; a collective, so every rank calls it."""
        snapshot.save(self)
        self.saved_step = self.step

    def _kept(self) -> str:
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return (
            f"the last checkpoint (step {self.saved_step}) is intact in {self.out / 'checkpoints'}"
        )

    # --- the loop --------------------------------------------------------------------

    def sample_grid(self) -> None:
        from udpm.data import save_image_grid

        n = 64
        labels = (torch.arange(n) % self.num_classes).to(self.device) if self.num_classes else None
        images = self.method.sample(self.ema.model, range(n), labels)
        self.grid_stats = self.method.diagnostics(images.clamp(-1, 1).cpu(), self.data.images)
        save_image_grid(images.clamp(-1, 1).cpu(), self.grid_path(), nrow=8)
        if getattr(self, "logger", None) is not None:
            self.logger.images("samples", images.clamp(-1, 1).cpu(), self.step)

    def grid_path(self) -> Path:
        return self.out / "samples" / f"step-{self.step:07d}.png"

    def run(self) -> Path:
        """Train to ``config.steps``; returns the last model file.

        Raises:
            Preempted: a stop signal came; the current step was saved first.
            UDPMError: a NaN loss, a full disk or another failed write, in one line that
                says which checkpoint is intact.
        """
        try:
            with StopSignals() as stop:
                self._loop(stop)
        except OSError as exc:  # metrics, sample grids: the disk, not a bug
            raise UDPMError(f"{os_error_line(exc, 'the run directory')}; {self._kept()}") from None
        finally:
            if self.run_dir is not None:
                self.run_dir.lock.release()
        return ckpt.model_path(self.out, self.step)

    @property
    def last_step(self) -> int:
        """Where this invocation stops: the planned ``config.steps``, or ``stop_at`` before."""
        steps = self.config.steps
        return steps if self.stop_at is None else min(steps, self.stop_at)

    def _loop(self, stop: StopSignals) -> None:
        cfg = self.config
        self.logger = logger = Logger(self.out, enabled=self.is_main)
        last = self.last_step
        bar = TrainReport(cfg, self.step, self.progress, self.is_main, last=last)
        bar.started(cfg, self)
        window, t_window, n_window = {}, time.perf_counter(), 0
        t_run = time.perf_counter()
        try:
            while self.step < last:
                if stop.requested():  # a step boundary: save, then stop
                    self._preempted(stop)
                t0 = time.perf_counter()
                logs = self._one_step()
                self.train_seconds += time.perf_counter() - t0
                n_window += 1
                for k, v in logs.items():
                    window.setdefault(k, []).append(v)
                if self.step % cfg.log_every == 0 or self.step == last:
                    # The losses are global means already (Method.optimise).
                    elapsed = time.perf_counter() - t_window
                    record = _summarise(window, self.step, n_window * cfg.batch_size / elapsed)
                    # The learning rate of this step, as the optimiser had it (a method's
                    # own schedule, e.g. DDGAN's cosine to lr_min), and the wall clock.
                    record["lr"] = self.method.current_lr()
                    record["wall_seconds"] = round(time.perf_counter() - t_run, 2)
                    record["time"] = round(time.time(), 2)
                    logger.log(record)
                    window, t_window, n_window = {}, time.perf_counter(), 0
                    bar.stepped(record)
                else:
                    bar.stepped(None)
                if self.step % cfg.sample_every == 0:
                    bar.grid_started(self.grid_path())
                    t_grid = time.perf_counter()
                    dist.together(self.sample_grid, main_only=True)
                    stats = getattr(self, "grid_stats", None)
                    bar.grid(self.grid_path(), time.perf_counter() - t_grid, stats)
                    if self.is_main and stats:
                        logger.log({"step": self.step, **stats})
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
            if self.saved_step != self.step:
                self.save()
        finally:
            bar.close()
            logger.close()

    def _preempted(self, stop: StopSignals) -> None:
        if self.saved_step != self.step:
            self.save()
        raise Preempted(
            f"stopped by {stop.name()} at step {self.step}; its checkpoint is saved in "
            f"{self.out / 'checkpoints'}; continue with --resume"
        )

    def _one_step(self) -> dict:
        self.method.set_lr(self.step)
        x0, labels = self.batches.next(self.rank_slice())
        x0 = x0.to(self.device)
        labels = None if labels is None else labels.to(self.device)
        try:
            logs = self.method.step(x0, labels, self.step)
        except NonFiniteLoss as exc:  # raised on every rank alike (Method.optimise)
            kept = (
                f"the last good checkpoint (step {self.saved_step}) is kept"
                if self.saved_step is not None
                else "no checkpoint had been written yet"
            )
            raise UDPMError(
                f"training stopped at step {self.step}: {exc}; {kept} in {self.out / 'checkpoints'}"
            ) from None
        self.ema.update(self.method.generator, self.step)
        self.step += 1
        return logs

    def rank_slice(self) -> slice | None:
        """This rank's samples of the global batch: ``rank, rank + W, ...`` (``BatchSplit``)."""
        if self.world_size == 1:
            return None
        return slice(self.rank, None, self.world_size)


def _summarise(window: dict, step: int, img_per_s: float) -> dict:
    record = {"step": step, "img_per_s": round(img_per_s, 2)}
    for k, values in window.items():
        if k == "level":
            for l in sorted(set(values)):
                record[f"level_{l}_share"] = values.count(l) / len(values)
        else:
            record[k] = sum(values) / len(values)
            if not math.isfinite(record[k]):
                record[k] = str(record[k])
    return record


def _version() -> str:
    from udpm import __version__

    return __version__


def train(
    config: Config,
    out,
    resume: bool | str = False,
    progress: bool = True,
    explicit: set[str] | None = None,
    compile: bool = False,
    stop_at: int | None = None,
) -> Path:
    """Train ``config`` into the run directory ``out``; returns the last model file.

    ``resume``: True continues the run in ``out`` (keeping its config; ``config.steps``
    is the new target), ``"auto"`` resumes if ``out`` holds a checkpoint and starts a new
    run otherwise. ``explicit``: see :func:`udpm.train.rundir.merge_intent`. ``compile``
    runs the generator's training forward through ``torch.compile``. ``stop_at``: stop
    (saved) at this step of the planned ``config.steps`` (training in chunks).

    Under ``torchrun`` each process calls this alike; it joins the process group from the
    environment (NCCL on GPUs, gloo on CPUs) and leaves it at the end.
    """
    with dist.process_group(config.device) as context:
        trainer = Trainer(
            config,
            Path(out),
            resume=resume,
            progress=progress,
            rank=context.rank,
            world_size=context.world_size,
            explicit=explicit,
            compile=compile,
            stop_at=stop_at,
        )
        return trainer.run()
