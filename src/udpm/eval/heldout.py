"""A deterministic held-out split of a SOURCE, for likelihoods measured on unseen images.

The held-out images are the last ``fraction`` (10%) of a permutation drawn from a CPU
generator seeded ``seed`` (0); the rest are the training images. Both parts keep the
source's order. :func:`write_split` stores them as two ``.npz`` SOURCEs, so that training
excludes the held-out part by taking ``--data TRAIN.npz`` and ``udpm eval --bpd-data
HELDOUT.npz`` measures on it: no data loader needs to know about splits. On emoji32 (3,781
images) the held-out part has 379 images and the training part 3,402.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from udpm.errors import UDPMError

FRACTION = 0.1
SEED = 0


def split_indices(n: int, fraction: float = FRACTION, seed: int = SEED):
    """``(train, heldout)``: sorted index tensors of a fixed seeded permutation of ``range(n)``."""
    if not 0 < fraction < 1:
        raise UDPMError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    k = math.ceil(n * fraction) if n > 1 else 0
    if not 0 < k < n:
        raise UDPMError(f"cannot hold out {fraction:.0%} of {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - k].sort().values, perm[n - k :].sort().values


def write_split(
    source: str, folder: str | Path, fraction: float = FRACTION, seed: int = SEED
) -> tuple[Path, Path]:
    """Write ``NAME-train.npz`` and ``NAME-heldout.npz`` into ``folder``; their paths.

    Files already there are rewritten only when their content would differ.
    """
    from udpm.data import load_source

    data = load_source(source)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(str(source)).stem
    paths = []
    for part, idx in zip(("train", "heldout"), split_indices(len(data), fraction, seed)):
        path = folder / f"{name}-{part}.npz"
        arrays = {"images": data.images[idx].permute(0, 2, 3, 1).numpy()}
        if data.labels is not None:
            arrays["labels"] = data.labels[idx].numpy()
        if not _same(path, arrays):
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **arrays)
            tmp.replace(path)
        paths.append(path)
    return paths[0], paths[1]


def _same(path: Path, arrays: dict) -> bool:
    if not path.is_file():
        return False
    with np.load(path) as old:
        return set(old.files) == set(arrays) and all(
            np.array_equal(old[k], v) for k, v in arrays.items()
        )
