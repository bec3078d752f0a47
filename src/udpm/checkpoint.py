"""Self-describing checkpoints, written atomically.

A run keeps two files per checkpoint in ``RUN/checkpoints``:

- ``model-STEP.safetensors``: the EMA generator weights, with the model kind, method, step
  and the whole resolved config in the safetensors metadata. Sampling needs only this file.
- ``state-STEP.pt``: the full training state (G, D, optimisers, EMA, step, RNG states),
  plain tensors and numbers only, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from udpm.errors import UDPMError

FORMAT = "udpm-checkpoint-v1"
_MODEL = re.compile(r"model-(\d+)\.safetensors$")


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so a crash never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model(path: Path, state_dict: dict, meta: dict, half: bool = False) -> None:
    """EMA weights plus metadata (all values JSON-encoded strings, as safetensors wants)."""
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in state_dict.items()
    }
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_meta(path: Path) -> dict:
    """The metadata of a model file, decoded; clear errors for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise UDPMError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UDPMError(f"checkpoint {path} is truncated or not a safetensors file ({exc})")
    if raw.get("format") != FORMAT:
        raise UDPMError(f"{path} is a safetensors file but not a udpm checkpoint")
    return {k: json.loads(v) for k, v in raw.items() if k != "format"}


def load_model(path: Path) -> tuple[dict, dict]:
    """``(state_dict in float32, metadata)`` of a model file."""
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UDPMError(f"checkpoint {path} is truncated or damaged ({exc})")
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta


def save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle refused by weights_only, ...
        raise UDPMError(f"training state {path} cannot be read ({type(exc).__name__})")


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps that have a model file in ``RUN/checkpoints``, sorted."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _MODEL.search(p.name)))


def model_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"model-{step:07d}.safetensors"


def state_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"state-{step:07d}.pt"


def resolve_model_file(path: Path) -> Path:
    """A model file, or the newest one of a run directory."""
    path = Path(path)
    if path.is_dir():
        steps = checkpoint_steps(path)
        if not steps:
            raise UDPMError(f"no checkpoints in {path / 'checkpoints'}")
        return model_path(path, steps[-1])
    if not path.exists():
        raise UDPMError(f"checkpoint not found: {path}")
    return path


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for step in checkpoint_steps(run_dir)[:-keep] if keep > 0 else []:
        for p in (model_path(run_dir, step), state_path(run_dir, step)):
            p.unlink(missing_ok=True)
