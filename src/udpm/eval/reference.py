"""Reference statistics: what a real data set looks like to a feature network, cached on disk.

Measuring a model means comparing its samples with the same real images again and again, so
the real side is computed once and stored as safetensors under the cache directory
(``$UDPM_CACHE/reference`` if ``UDPM_CACHE`` is set, else ``~/.cache/udpm/reference``).

An entry is keyed by everything that changes its content:

* the data set's identity: its name and a hash of its file (or folder) contents, or a key
  chosen by the caller;
* the feature network's hash (`udpm.eval.features.feature_network_hash`);
* the resize mode that brings images to the network's input size.

What an entry holds depends on the feature network: all the real features for udpm's own
networks (precision/recall and KID need the points, not just their mean and covariance),
the accumulated sums of torchmetrics' FID state for Inception-v3.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from udpm.errors import UDPMError

_EMBEDDED = ("emoji32",)


def default_cache_dir() -> Path:
    """``$UDPM_CACHE/reference``, or ``~/.cache/udpm/reference`` when UDPM_CACHE is unset."""
    root = os.environ.get("UDPM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "udpm"
    return base / "reference"


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def dataset_identity(source: str | os.PathLike) -> str:
    """``<name>-<sha256 of the contents, 12 hex>`` for a SOURCE (file, folder or embedded name).

    Folders hash every file's relative path and bytes, in sorted order, so renaming,
    adding or editing an image gives a new identity.
    """
    name = os.fspath(source)
    path = Path(name).expanduser()
    stem = path.name.split(".")[0]
    if not path.exists() and name in _EMBEDDED:
        path, stem = Path(str(resources.files("udpm") / "assets" / f"{name}.npz")), name
    if not path.exists():
        raise UDPMError(f"cannot identify data set {name!r}: no such file or folder")
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            _hash_file(file, digest)
    else:
        _hash_file(path, digest)
    return f"{stem}-{digest.hexdigest()[:12]}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unnamed"


def reference_path(
    dataset_key: str,
    network_hash: str,
    resize_mode: str,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Where the entry for (data set, feature network, resize mode) lives."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = f"{_slug(dataset_key)}__{_slug(network_hash)}__{_slug(resize_mode)}.safetensors"
    return root / name


def load_reference(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The tensors of a cached entry, or None if there is none (or it is unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # a truncated or foreign file is a cache miss, recomputed and replaced
        return None


def save_reference(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write an entry atomically (write to a temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.fspath(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)
