"""The training loop shared by every method: data, warm-up, EMA, logs, grids, checkpoints.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``samples/`` and
``checkpoints/``. ``resume=True`` continues from the newest checkpoint exactly: the
weights, optimisers, EMA, step and every random generator are restored.

Under ``torchrun`` (see ``train.distributed``) every process runs the same loop on its
part of each global batch: rank 0 alone writes the run directory, the others take its
config and checkpoints through collectives, and a failure on one rank stops them all.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from udpm import checkpoint as ckpt
from udpm.config import Config
from udpm.data.batches import Batches
from udpm.device import autocast_dtype, resolve_device
from udpm.errors import UDPMError
from udpm.methods import get_method, get_spec
from udpm.methods.base import NonFiniteLoss
from udpm.train import distributed as dist
from udpm.train.ema import EMA


def prepare_run_dir(out: Path, config: Config, resume: bool) -> Config:
    """Create ``out`` for a new run, or read the config of the run to resume.

    A new run refuses a directory that already holds a run, so nothing is overwritten.
    """
    config_file = out / "config.yaml"
    if resume:
        if not config_file.is_file() or not ckpt.checkpoint_steps(out):
            raise UDPMError(f"--resume: {out} holds no run with a checkpoint to resume")
        saved = Config.from_dict(yaml.safe_load(config_file.read_text()))
        saved = saved.replace(steps=config.steps)  # the one field a resumed run may change
        return saved
    if config_file.exists() or ckpt.checkpoint_steps(out):
        raise UDPMError(f"{out} already holds a run; pass --resume or choose another --out")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    ckpt.atomic_write(config_file, lambda tmp: Path(tmp).write_text(config.to_yaml()))
    return config


class Logger:
    """``metrics.jsonl`` always; TensorBoard too when it is installed."""

    def __init__(self, out: Path, enabled: bool = True):
        self.file = open(out / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # tensorboard is an optional extra
                self.tb = None

    def log(self, record: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """Runs ``config.steps`` steps of ``config.method`` and writes the run directory."""

    def __init__(
        self,
        config: Config,
        out: Path,
        resume: bool = False,
        progress: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.out, self.progress = Path(out), progress
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        if world_size != dist.world_size():
            raise UDPMError(
                f"world_size={world_size} but the process group has {dist.world_size()}; "
                "call udpm.train.train under torchrun, which sets up the group"
            )
        get_spec(config.method).validate(config)
        dist.BatchSplit(config.batch_size, world_size, rank, config.micro_batch)  # fail early
        dist.check_same(
            {"config": config.to_dict(), "udpm": _version(), "torch": torch.__version__}
        )
        # Rank 0 creates (or, to resume, reads) the run directory; all ranks take its config.
        self.config = dist.together(
            lambda: prepare_run_dir(self.out, config, resume), main_only=True, share=True
        )
        cfg = self.config
        self.split = dist.BatchSplit(cfg.batch_size, world_size, rank, cfg.micro_batch)
        self.data = dist.together(lambda: self._load_data(cfg))  # each rank reads its copy
        dist.check_same({"images": list(self.data.images.shape)}, what="data")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = dist.local_device(resolve_device(cfg.device))
        # Every rank builds the same initial networks; then each draws its own dropout
        # masks (rank 0 goes on with the stream of a single-process run).
        torch.manual_seed(cfg.seed)
        method_cls = get_method(cfg.method)
        self.method = method_cls(
            cfg, self.device, self.num_classes, autocast_dtype(cfg.amp, self.device)
        )
        self.method.distribute(self.split)
        if rank:
            torch.manual_seed(cfg.seed + rank)
        self.ema = EMA(self.method.generator, cfg.ema_decay)
        self.batches = Batches(
            self.data.images,
            self.data.labels if cfg.class_conditional else None,
            cfg.batch_size,
            cfg.hflip,
            cfg.seed + 12345,
        )
        self.step, self.train_seconds, self.saved_step = 0, 0.0, None
        if resume:
            step = dist.together(
                lambda: ckpt.checkpoint_steps(self.out)[-1], main_only=True, share=True
            )
            dist.together(lambda: self._restore(step))

    def _load_data(self, cfg: Config):
        from udpm.data import load_source

        data = load_source(
            cfg.data, resolution=cfg.resolution, channels=cfg.channels, max_images=cfg.max_images
        )
        self.num_classes = data.num_classes if cfg.class_conditional else 0
        if cfg.class_conditional and not self.num_classes:
            raise UDPMError(f"class_conditional is set but {cfg.data} has no labels")
        return data

    # --- checkpoints -----------------------------------------------------------------

    def meta(self) -> dict:
        cfg = self.config
        return {
            "kind": "generator",
            "method": cfg.method,
            "step": self.step,
            "config": cfg.to_dict(),
            "num_classes": self.num_classes,
            "class_names": list(self.data.class_names or []) if self.num_classes else [],
            "train_seconds": round(self.train_seconds, 1),
            "images_seen": self.step * cfg.batch_size,
            "data": str(cfg.data),
            "udpm_version": _version(),
        }

    def save(self) -> None:
        """Write a checkpoint from rank 0; a collective, so every rank calls it.

        The EMA and weights are rank 0's (every rank holds the same); the random state of
        each rank's dropout is gathered so that a resumed run continues exactly.
        """
        rngs = dist.all_gather_object(_rng_state())
        dist.together(lambda: self._write(rngs), main_only=True)
        self.saved_step = self.step

    def _write(self, rngs: list[dict]) -> None:
        ckpt.save_model(ckpt.model_path(self.out, self.step), self.ema.state_dict(), self.meta())
        state = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "method": self.method.state_dict(),
            "ema": self.ema.state_dict(),
            "batches": self.batches.state_dict(),
            "torch_rng": rngs[0]["torch"],
            "cuda_rng": rngs[0]["cuda"],
            "rank_rngs": rngs[1:],  # ranks 1.. of a run on several processes
        }
        ckpt.save_state(ckpt.state_path(self.out, self.step), state)
        ckpt.prune(self.out, self.config.keep)

    def _restore(self, step: int) -> None:
        """Every rank loads the same state file (a shared file system across nodes)."""
        state = ckpt.load_state(ckpt.state_path(self.out, step))
        self.method.load_state_dict(state["method"])
        self.ema.load_state_dict(state["ema"])
        self.batches.load_state_dict(state["batches"])
        self.step, self.train_seconds = int(state["step"]), float(state["train_seconds"])
        self.saved_step = self.step
        rngs = [{"torch": state["torch_rng"], "cuda": state["cuda_rng"]}]
        rngs += state.get("rank_rngs", [])
        if self.rank < len(rngs):
            _set_rng_state(rngs[self.rank])
        else:  # more processes than the run had: a fresh dropout stream for this rank
            torch.manual_seed(self.config.seed + self.rank + 1_000_003 * self.step)

    # --- the loop --------------------------------------------------------------------

    def sample_grid(self) -> None:
        from udpm.data import save_image_grid

        n = 64
        labels = (torch.arange(n) % self.num_classes).to(self.device) if self.num_classes else None
        images = self.method.sample(self.ema.model, range(n), labels)
        save_image_grid(
            images.clamp(-1, 1).cpu(), self.out / "samples" / f"step-{self.step:07d}.png", nrow=8
        )

    def run(self) -> Path:
        cfg = self.config
        logger = Logger(self.out, enabled=self.is_main)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (self.progress and self.is_main),
            desc=f"train {cfg.method}",
            dynamic_ncols=True,
        )
        window, t_window, n_window = {}, time.perf_counter(), 0
        try:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                logs = self._one_step()
                self.train_seconds += time.perf_counter() - t0
                n_window += 1
                for k, v in logs.items():
                    window.setdefault(k, []).append(v)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    # The losses are global means already (Method.optimise).
                    elapsed = time.perf_counter() - t_window
                    record = _summarise(window, self.step, n_window * cfg.batch_size / elapsed)
                    logger.log(record)
                    bar.set_postfix(
                        {
                            k: f"{v:.3g}"
                            for k, v in record.items()
                            if k in ("loss_g", "loss_d", "l1", "img_per_s")
                        }
                    )
                    window, t_window, n_window = {}, time.perf_counter(), 0
                bar.update(1)
                if self.step % cfg.sample_every == 0:
                    dist.together(self.sample_grid, main_only=True)
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
            if self.saved_step != self.step:
                self.save()
        finally:
            bar.close()
            logger.close()
        return ckpt.model_path(self.out, self.step)

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


def _rng_state() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def train(config: Config, out, resume: bool = False, progress: bool = True) -> Path:
    """Train ``config`` into the run directory ``out``; returns the last model file.

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
        )
        return trainer.run()
