"""Latent-space tools (paper figures 5, 8, 10 and 13): interpolate, swap, perturb, PCA.

Each takes a UDPM :class:`~udpm.pipeline.Pipeline` and :class:`Latent` objects (or seeds,
or latent files) and returns images in ``[-1, 1]`` on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from udpm.errors import UDPMError
from udpm.latent.core import Latent, decode, require_udpm, resolve_latent
from udpm.latent.mixing import check_gamma, grid_coordinates, mix_corners, perturb_map
from udpm.latent.mixing import slerp as slerp_maps


def _resolve_all(model, latents, class_label) -> list[Latent]:
    require_udpm(model)
    return [resolve_latent(model, spec, class_label) for spec in latents]


def _nearest(j: int, steps: int) -> int:
    """0 for the first half of the positions, 1 for the second (ties go to the first)."""
    return int(2 * j > steps - 1)


def _row(a: Latent, b: Latent, steps: int, slerp: bool) -> list[Latent]:
    """``steps`` latents from ``a`` to ``b``; each takes the class of the nearer end."""
    out = []
    for j, delta in enumerate(grid_coordinates(steps)):
        t = j / (steps - 1)
        if slerp:
            maps = [slerp_maps(ea, eb, t) for ea, eb in zip(a.noises, b.noises)]
        else:
            maps = [mix_corners((ea, eb, ea, eb), 1.0, delta) for ea, eb in zip(a.noises, b.noises)]
        out.append((b if _nearest(j, steps) else a).with_noises(maps))
    return out


def _grid(corners: Sequence[Latent], steps: int, slerp: bool) -> list[Latent]:
    """``steps × steps`` latents in row-major order; corners e1 top left, e2 top right,
    e3 bottom left, e4 bottom right. Each takes the class of the nearest corner."""
    coords = grid_coordinates(steps)
    out = []
    for i, eta in enumerate(coords):
        for j, delta in enumerate(coords):
            if slerp:
                s, t = i / (steps - 1), j / (steps - 1)
                maps = [
                    slerp_maps(slerp_maps(e1, e2, t), slerp_maps(e3, e4, t), s)
                    for e1, e2, e3, e4 in zip(*(c.noises for c in corners))
                ]
            else:
                maps = [mix_corners(es, eta, delta) for es in zip(*(c.noises for c in corners))]
            nearest = corners[2 * _nearest(i, steps) + _nearest(j, steps)]
            out.append(nearest.with_noises(maps))
    return out


def interpolation_latents(
    latents: Sequence[Latent], steps: int = 8, slerp: bool = False
) -> list[Latent]:
    """The latents of :func:`interpolate`, in row-major order (``steps`` or ``steps²``)."""
    if len(latents) == 2:
        return _row(latents[0], latents[1], steps, slerp)
    if len(latents) == 4:
        return _grid(latents, steps, slerp)
    raise UDPMError(f"interpolate takes 2 latents (a row) or 4 (a grid), got {len(latents)}")


def interpolate(
    model,
    latents: Sequence,
    steps: int = 8,
    slerp: bool = False,
    class_label: int | None = None,
) -> torch.Tensor:
    """Images along a path between 2 latents, or on a grid between 4.

    Every noise map is mixed with ``η(δ e1 + √(1-δ²) e2) + √(1-η²)(δ e3 + √(1-δ²) e4)``,
    ``η`` and ``δ`` going from 1 to 0 as ``cos(π/2 · j/(steps-1))``, which keeps unit
    variance and moves at a constant angle per step. Two latents give the top row
    (``η = 1``): ``δ a + √(1-δ²) b``. ``slerp=True`` mixes each map spherically instead
    (nested, rows then columns, for four). The end points are the latents themselves, bit
    for bit. Class-conditional models decode each point with the nearest end's class.

    Args:
        latents: 2 or 4 seeds, latent files or :class:`Latent` objects.
        steps: points per side, ends included (at least 2).
        class_label: class of the latents given as seeds.

    Returns:
        2 latents: ``(steps, C, H, W)`` from ``a`` to ``b``. 4 latents:
        ``(steps, steps, C, H, W)`` with ``e1`` at ``[0, 0]``, ``e2`` at ``[0, -1]``,
        ``e3`` at ``[-1, 0]`` and ``e4`` at ``[-1, -1]``.
    """
    if len(latents) not in (2, 4):
        raise UDPMError(f"interpolate takes 2 latents (a row) or 4 (a grid), got {len(latents)}")
    resolved = _resolve_all(model, latents, class_label)
    images = decode(model, interpolation_latents(resolved, steps, slerp))
    return images if len(latents) == 2 else images.view(steps, steps, *images.shape[1:])


def swap_latents(a: Latent, b: Latent) -> list[Latent]:
    """``B`` with its ``l``-th map taken from ``A``, for ``l = 1..L`` (``B``'s class)."""
    out = []
    for l in range(b.levels):
        maps = list(b.noises)
        maps[l] = a.noises[l]
        out.append(b.with_noises(maps))
    return out


def swap(model, a, b, class_label: int | None = None) -> torch.Tensor:
    """The row ``[A, B with A's e_1, .., B with A's e_L, B]``, shape ``(L + 2, C, H, W)``.

    Shows what each level controls: the coarse level (``L``) sets layout and identity, the
    fine levels texture and detail.
    """
    a, b = _resolve_all(model, [a, b], class_label)
    return decode(model, [a, *swap_latents(a, b), b])


def perturbation_noises(latent: Latent, level: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    """The ``n`` fresh maps ``n_i`` for level ``level``, drawn in order from one generator
    seeded with ``seed``, so the first ``k`` do not depend on ``n``."""
    gen = torch.Generator().manual_seed(int(seed))
    shape = latent.noises[level - 1].shape
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def perturb_latents(
    latent: Latent, level: int, gamma: float, n: int, seed: int = 0
) -> list[Latent]:
    """``n`` latents equal to ``latent`` except map ``level``: ``γ e + √(1-γ²) n_i``."""
    check_gamma(gamma)
    if not 1 <= level <= latent.levels:
        raise UDPMError(f"level must be in 1..{latent.levels}, got {level}")
    if n < 1:
        raise UDPMError(f"the number of perturbed samples must be at least 1, got {n}")
    out = []
    for noise in perturbation_noises(latent, level, n, seed):
        maps = list(latent.noises)
        maps[level - 1] = perturb_map(maps[level - 1], noise, gamma)
        out.append(latent.with_noises(maps))
    return out


def perturb(
    model, latent, level: int, gamma: float = 0.9, n: int = 8, seed: int = 0
) -> torch.Tensor:
    """``n`` variations ``(n, C, H, W)`` of one image: all maps fixed but ``e_level``,
    which becomes ``γ e + √(1-γ²) n_i`` (``γ = 1``: the image itself; ``γ = 0``: a fresh
    map). ``seed`` seeds the perturbations ``n_i``."""
    check_gamma(gamma)
    (latent,) = _resolve_all(model, [latent], None)
    return decode(model, perturb_latents(latent, level, gamma, n, seed))


@dataclass
class PCAResult:
    """Principal components of the images made by perturbing one level.

    Attributes:
        level: the perturbed level.
        components: ``(k, C, H, W)``, orthonormal when flattened, sorted by variance; the
            sign is fixed so that each one's largest-magnitude pixel is positive.
        explained_variance: ``(k,)`` the covariance eigenvalues, descending.
        explained_variance_ratio: ``(k,)`` their shares of ``total_variance``.
        total_variance: trace of the image covariance (sum of per-pixel variances).
        mean: ``(C, H, W)`` the mean perturbed image.
    """

    level: int
    components: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor
    total_variance: float
    mean: torch.Tensor

    def display(self) -> torch.Tensor:
        """Components scaled to ``[-1, 1]`` each (0 is mid-grey), for a picture."""
        flat = self.components.flatten(1)
        scale = flat.abs().amax(1).clamp_min(1e-12)
        return (flat / scale[:, None]).view_as(self.components).float()


def image_pca(images: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Top-``k`` principal directions of ``images`` ``(n, ...)``: ``(components (k, D),
    eigenvalues (k,), total variance)``, in float64, by an SVD of the centred data."""
    n = images.shape[0]
    x = images.flatten(1).double()
    if n < 2:
        raise UDPMError(f"PCA needs at least 2 samples, got {n}")
    if not 1 <= k <= min(n, x.shape[1]):
        raise UDPMError(f"the number of components must be in 1..{min(n, x.shape[1])}, got {k}")
    centred = x - x.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:k]
    peak = components.abs().argmax(1)
    components = components * components.gather(1, peak[:, None]).sign()
    eigenvalues = s**2 / (n - 1)
    return components, eigenvalues[:k], float(eigenvalues.sum())


def perturbation_pca(
    model, latent, level: int, gamma: float = 0.9, n: int = 128, k: int = 8, seed: int = 0
) -> PCAResult:
    """PCA of ``n`` images perturbed at ``level`` (paper figure 8: ``n = 128``, ``k = 8``)."""
    check_gamma(gamma)
    if not 2 <= n:
        raise UDPMError(f"PCA needs at least 2 samples, got {n}")
    images = perturb(model, latent, level, gamma, n, seed)
    components, eigenvalues, total = image_pca(images, k)
    ratio = eigenvalues / total if total > 0 else torch.zeros_like(eigenvalues)
    shape = images.shape[1:]
    return PCAResult(level, components.view(k, *shape), eigenvalues, ratio, total, images.mean(0))


def variance_report(results: Sequence[PCAResult]) -> dict:
    """Each level's share of the variance (its total / the sum over levels) and its top-k
    explained-variance ratios, as plain numbers for printing and JSON."""
    grand = sum(r.total_variance for r in results)
    return {
        "levels": [
            {
                "level": r.level,
                "total_variance": r.total_variance,
                "share": r.total_variance / grand if grand > 0 else 0.0,
                "explained_variance_ratio": [
                    round(float(v), 6) for v in r.explained_variance_ratio
                ],
            }
            for r in results
        ]
    }
