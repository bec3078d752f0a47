"""Distances between two sets of features: Fréchet distance, KID, precision and recall.

Every function here takes feature tensors, real (M, D) and fake (N, D), as produced by a
feature network (`udpm.eval.features`), so features are computed once and the real ones
can be cached (`udpm.eval.reference`).

* FD and KID are computed by torchmetrics (``FrechetInceptionDistance`` and
  ``KernelInceptionDistance`` with a custom ``feature`` module). The module handed to them
  here is the identity, `GivenFeatures`: what we pass to ``update`` already *is* a feature.
* Precision and recall follow Kynkäänniemi et al. 2019, "Improved precision and recall
  metric for assessing generative models": each set of features defines a manifold, the
  union of balls around its points whose radius is the distance to the point's k-th nearest
  neighbour in the same set. Precision is the fraction of fake features inside the real
  manifold, recall the fraction of real features inside the fake manifold.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from udpm.errors import UDPMError

# Pairwise distances are computed in blocks of at most this many entries (256 MB in float32).
_BLOCK_ENTRIES = 2**26


class GivenFeatures(nn.Module):
    """Identity 'feature network' for torchmetrics, for inputs that are already features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check(real: torch.Tensor, fake: torch.Tensor, at_least: int) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise UDPMError(
            f"features must be (N, D) with equal D, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if min(len(real), len(fake)) < at_least:
        raise UDPMError(
            f"need at least {at_least} real and fake images, got {len(real)} and {len(fake)}"
        )


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID).

    ``‖μ_r − μ_f‖² + tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½)``, in float64, by torchmetrics.
    """
    _check(real, fake, at_least=2)
    metric = FrechetInceptionDistance(feature=GivenFeatures(real.shape[1]))
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    return float(metric.compute())


def kernel_inception_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    subset_size: int | None = None,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel.

    Averaged over ``subsets`` random subsets of ``subset_size`` (default ``min(1000, M, N)``)
    features from each set; returns (mean, std over subsets). The subsets are drawn from a
    generator seeded with ``seed``, so the result is deterministic.
    """
    _check(real, fake, at_least=2)
    size = subset_size or min(1000, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": that is the point
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=GivenFeatures(real.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _row_blocks(n_rows: int, n_cols: int) -> range:
    step = max(1, _BLOCK_ENTRIES // max(n_cols, 1))
    return range(0, n_rows, step)


def knn_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance from each feature to its k-th nearest neighbour in the same set, (N,)."""
    if len(features) <= k:
        raise UDPMError(f"k-NN manifold needs more than k={k} points, got {len(features)}")
    step = _row_blocks(len(features), len(features)).step
    radii = []
    for rows in features.split(step):
        d = torch.cdist(rows, features)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k + 1: each point is its own 0-th
    return torch.cat(radii)


def fraction_inside(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of ``queries`` within ``radii[j]`` of some ``support[j]``."""
    step = _row_blocks(len(queries), len(support)).step
    inside = 0
    for rows in queries.split(step):
        d = torch.cdist(rows, support)
        inside += int((d <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    Args:
        real: real features (M, D).
        fake: generated features (N, D), same device as ``real``.
        k: neighbourhood size of the manifold estimate (the paper uses 3).

    Returns:
        (precision, recall): the fraction of fake features inside the real manifold, and the
        fraction of real features inside the fake manifold.
    """
    _check(real, fake, at_least=k + 1)
    real, fake = real.float(), fake.float()
    precision = fraction_inside(fake, real, knn_radii(real, k))
    recall = fraction_inside(real, fake, knn_radii(fake, k))
    return precision, recall
