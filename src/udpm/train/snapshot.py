"""What a trainer puts into a checkpoint pair, and how it takes it back.

The EMA and weights are rank 0's (every rank holds the same); the random state of each
rank's dropout is gathered so that a resumed run continues exactly, on any number of
processes.
"""

from __future__ import annotations

import torch

from udpm import checkpoint as ckpt
from udpm.errors import UDPMError
from udpm.train import distributed as dist


def meta(trainer) -> dict:
    """The model file's metadata: enough to sample, and to check a resume's data."""
    cfg = trainer.config
    return {
        "kind": "generator",
        "method": cfg.method,
        "step": trainer.step,
        "config": cfg.to_dict(),
        "num_classes": trainer.num_classes,
        "class_names": list(trainer.data.class_names or []) if trainer.num_classes else [],
        "train_seconds": round(trainer.train_seconds, 1),
        "images_seen": trainer.step * cfg.batch_size,
        "data": str(cfg.data),
        "data_sha256": trainer.data_sha256,
        "resolution": int(trainer.data.images.shape[-1]),  # the side it was trained at
        "udpm_version": _version(),
    }


def save(trainer) -> None:
    """Write the pair of ``trainer.step`` from rank 0; a collective, so every rank calls it."""
    rngs = dist.all_gather_object(_rng_state())
    dist.together(lambda: _write(trainer, rngs), main_only=True)


def _write(trainer, rngs: list[dict]) -> None:
    state = {
        "step": trainer.step,
        "train_seconds": trainer.train_seconds,
        "method": trainer.method.state_dict(),
        "ema": trainer.ema.state_dict(),
        "batches": trainer.batches.state_dict(),
        "torch_rng": rngs[0]["torch"],
        "cuda_rng": rngs[0]["cuda"],
        "rank_rngs": rngs[1:],  # ranks 1.. of a run on several processes
    }
    try:
        ckpt.save_pair(trainer.out, trainer.step, trainer.ema.state_dict(), meta(trainer), state)
        ckpt.prune(trainer.out, trainer.config.keep)
    except ckpt.DiskFull as exc:
        raise UDPMError(f"{exc}; {trainer._kept()}; free some space, then --resume") from None


def restore(trainer, step: int) -> None:
    """Every rank loads the same state file (a shared file system across nodes)."""
    out = trainer.out
    model_meta = ckpt.read_meta(ckpt.model_path(out, step))
    state = ckpt.load_state(ckpt.state_path(out, step), model_meta.get("state_sha256"))
    trainer.method.load_state_dict(state["method"])
    trainer.ema.load_state_dict(state["ema"])
    trainer.batches.load_state_dict(state["batches"])
    trainer.step, trainer.train_seconds = int(state["step"]), float(state["train_seconds"])
    trainer.saved_step = trainer.step
    rngs = [{"torch": state["torch_rng"], "cuda": state["cuda_rng"]}]
    rngs += state.get("rank_rngs", [])
    if trainer.rank < len(rngs):
        _set_rng_state(rngs[trainer.rank])
    else:  # more processes than the run had: a fresh dropout stream for this rank
        torch.manual_seed(trainer.config.seed + trainer.rank + 1_000_003 * trainer.step)


def _rng_state() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _version() -> str:
    from udpm import __version__

    return __version__
