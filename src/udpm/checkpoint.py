"""Self-describing checkpoints: atomic, checksummed pairs of files.

A run keeps two files per checkpoint in ``RUN/checkpoints``:

- ``state-STEP.pt``: the full training state (G, D, optimisers, EMA, step, RNG states),
  plain tensors and numbers only, loaded with ``torch.load(weights_only=True)``.
- ``model-STEP.safetensors``: the EMA generator weights, with the model kind, method, step
  and the whole resolved config in the safetensors metadata. Sampling needs only this file.

The state file is written first and the model file last, each to a temporary name that is
renamed into place (and synced), so the rename of the model file commits the pair: a
model file exists only once its state file is complete. The model's metadata holds a
SHA-256 of its own tensors and metadata (``sha256``) and one of the state file's bytes
(``state_sha256``); both are checked on load, so a flipped bit is an error that names the
file instead of weights of 1e33.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from udpm.errors import UDPMError
from udpm.train import faults

FORMAT = "udpm-checkpoint-v2"  # v2 files carry checksums and must verify
LEGACY_FORMAT = "udpm-checkpoint-v1"  # written before checksums (the shipped model): unchecked
_MODEL = re.compile(r"model-(\d+)\.safetensors$")
_STATE = re.compile(r"state-(\d+)\.pt$")
TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # what atomic_write leaves after a kill
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UDPMError):
    """A write ran out of space (ENOSPC or a quota); the file it replaces is untouched."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, sync it, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never half of one;
    what it can leave is a ``.NAME.XXXX.tmp`` file, which the next start removes.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        faults.point("partial", tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        faults.point("written")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        faults.point("renamed")
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFull(f"disk full while writing {path} ({exc.strerror})") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself survive a power cut; some file systems cannot, so best effort."""
    try:
        _fsync(folder)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- checksums ---------------------------------------------------------------------------


def tensors_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata (without ``sha256``) and every tensor's name, type and bytes.

    Computed from the tensors rather than the file, so it does not depend on how a
    safetensors version lays the file out.
    """
    h = hashlib.sha256()
    rest = {k: v for k, v in metadata.items() if k != "sha256"}
    h.update(json.dumps(rest, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes, without a copy
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- model files -------------------------------------------------------------------------


def save_model(path: Path, state_dict: dict, meta: dict, half: bool = False) -> None:
    """EMA weights plus metadata (all values JSON-encoded strings, as safetensors wants)."""
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in state_dict.items()
    }
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    metadata["sha256"] = json.dumps(tensors_digest(tensors, metadata))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _raw_meta(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise UDPMError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise UDPMError(f"checkpoint {path} is truncated or not a safetensors file ({first})")
    if raw.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise UDPMError(f"{path} is a safetensors file but not a udpm checkpoint")
    return raw


def read_meta(path: Path) -> dict:
    """The metadata of a model file, decoded; clear errors for missing or damaged files."""
    meta = {}
    for k, v in _raw_meta(path).items():
        if k == "format":
            continue
        try:
            meta[k] = json.loads(v)
        except ValueError:
            raise UDPMError(f"checkpoint {path} has malformed metadata (field {k!r})") from None
    for key, kind in (("config", dict), ("step", int)):
        if key in meta and not isinstance(meta[key], kind):
            raise UDPMError(f"checkpoint {path} has malformed metadata (field {key!r})")
    return meta


def load_model(path: Path) -> tuple[dict, dict]:
    """``(state_dict in float32, metadata)`` of a model file, its checksum verified.

    Files written before checksums existed (``LEGACY_FORMAT``) load unverified.
    """
    raw = _raw_meta(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise UDPMError(f"checkpoint {path} is truncated or damaged ({first})")
    if raw["format"] != LEGACY_FORMAT and tensors_digest(tensors, raw) != meta.get("sha256"):
        raise UDPMError(f"checkpoint {path} is damaged: its SHA-256 checksum does not match")
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta


# --- training state files ----------------------------------------------------------------


def save_state(path: Path, state: dict) -> str:
    """Write the state file; returns the SHA-256 of what reached the disk."""
    digest = {}

    def write(tmp):
        torch.save(state, tmp)
        digest["sha256"] = file_digest(tmp)

    atomic_write(path, write)
    return digest["sha256"]


def load_state(path: Path, sha256: str | None = None) -> dict:
    """The training state; with ``sha256`` (from the model file) the bytes are checked first."""
    path = Path(path)
    if not path.is_file():
        raise UDPMError(f"training state {path} is missing")
    if sha256 is not None and file_digest(path) != sha256:
        raise UDPMError(f"training state {path} is damaged: its SHA-256 checksum does not match")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle refused by weights_only, ...
        raise UDPMError(f"training state {path} cannot be read ({type(exc).__name__})")


# --- pairs -------------------------------------------------------------------------------


def save_pair(run_dir: Path, step: int, ema: dict, meta: dict, state: dict) -> None:
    """Write ``state-STEP`` then ``model-STEP`` (the commit); a failure leaves no half pair."""
    state_file = state_path(run_dir, step)
    try:
        digest = save_state(state_file, state)
        save_model(model_path(run_dir, step), ema, {**meta, "state_sha256": digest})
    except BaseException:
        if not model_path(run_dir, step).exists():
            state_file.unlink(missing_ok=True)
        raise


def verify_state(run_dir: Path, step: int, meta: dict) -> None:
    """Check the state file of ``step`` against the checksum in its model's ``meta``."""
    path, sha256 = state_path(run_dir, step), meta.get("state_sha256")
    if sha256 is not None and file_digest(path) != sha256:
        raise UDPMError(f"training state {path} is damaged: its SHA-256 checksum does not match")


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps that have a model file in ``RUN/checkpoints``, sorted."""
    return _steps(run_dir, _MODEL)


def state_steps(run_dir: Path) -> list[int]:
    """Steps that have a state file in ``RUN/checkpoints``, sorted."""
    return _steps(run_dir, _STATE)


def complete_steps(run_dir: Path) -> list[int]:
    """Steps whose pair is complete (model and state file), sorted."""
    return sorted(set(checkpoint_steps(run_dir)) & set(state_steps(run_dir)))


def _steps(run_dir: Path, pattern: re.Pattern) -> list[int]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.search(p.name)))


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
    """Delete all but the newest ``keep`` checkpoints; the model file first (the commit)."""
    for step in checkpoint_steps(run_dir)[:-keep] if keep > 0 else []:
        model_path(run_dir, step).unlink(missing_ok=True)
        faults.point("pruning")
        state_path(run_dir, step).unlink(missing_ok=True)
