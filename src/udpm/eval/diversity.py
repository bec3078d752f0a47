"""Cheap diversity diagnostics for training logs (no feature network, no reference set).

Never used as a loss: they read only samples and data pixels.
"""

from __future__ import annotations

import torch


def median_nn_distance(x: torch.Tensor) -> float:
    """Median over images of the L2 distance to the nearest *other* image (pixels)."""
    flat = x.flatten(1).double()
    d = torch.cdist(flat, flat)
    d.fill_diagonal_(float("inf"))
    return float(d.min(1).values.median())


def diversity_ratios(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """``top_std_ratio`` (mean per-pixel std, fake over real) and ``nn_ratio`` (median
    nearest-neighbour distance, fake over real); both (N, C, H, W), same N."""
    std = fake.double().std(0).mean() / real.double().std(0).mean().clamp_min(1e-12)
    nn = median_nn_distance(fake) / max(median_nn_distance(real), 1e-12)
    return {"top_std_ratio": round(float(std), 4), "nn_ratio": round(float(nn), 4)}
