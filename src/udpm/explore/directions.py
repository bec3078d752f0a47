"""Each level's principal directions of variation, as unit directions in its noise map.

The perturbation PCA of :func:`udpm.latent.perturbation_pca` (paper figure 8) finds the
image-space directions ``c_k`` along which re-drawing a little of ``e_l`` moves the image.
A slider needs the *latent* direction that makes that move. To first order the perturbed
images are ``x(e_l + δ) ≈ x + J δ`` with ``J = ∂x/∂e_l``; isotropic perturbations
``δ ~ N(0, σ² I)`` have image covariance ``σ² J Jᵀ``, so the ``c_k`` are the left singular
vectors of ``J`` and the latent directions that produce them are its right singular vectors
``v_k`` (``J v_k = s_k c_k``). We take ``J`` by finite differences along the ``C × h × w``
coordinate axes (one batched decode, no gradients: the sampler runs under ``no_grad``) and
keep the top ``k`` right singular vectors. The step is the size of the perturbation PCA's
own perturbations, ``√(1-γ²)`` at ``γ = 0.9``: the coarse levels are far from linear, and
a secant at that scale describes what a slider does better than a tangent does.

Since ``e_l ~ N(0, I)``, its coordinate along a unit ``v_k`` is ``N(0, 1)``: a slider value
``t`` is ``t`` prior standard deviations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from udpm.errors import UDPMError
from udpm.latent import Latent, decode

STEP = math.sqrt(1 - 0.9**2)  # the perturbation size of `udpm perturb` at its default γ


@dataclass
class LevelDirections:
    """The top ``k`` latent directions of one level at one latent.

    Attributes:
        level: the level ``l`` (1..L) whose map ``e_l`` they live in.
        directions: ``(k, C, h_l, w_l)``, orthonormal when flattened, sorted by ``gains``.
        gains: ``(k,)`` the singular values ``s_k``: image change (L2) per unit step.
    """

    level: int
    directions: torch.Tensor
    gains: torch.Tensor


def with_map(latent: Latent, level: int, e: torch.Tensor) -> Latent:
    """``latent`` with its map ``e_level`` replaced by ``e``."""
    maps = list(latent.noises)
    maps[level - 1] = e
    return latent.with_noises(maps)


def jacobian(model, latent: Latent, level: int, step: float = STEP) -> torch.Tensor:
    """``∂x/∂e_level`` at ``latent``, shape ``(C·H·W, C·h_l·w_l)``, by forward differences."""
    e = latent.noises[level - 1]
    basis = torch.eye(e.numel()).view(e.numel(), *e.shape)
    shifted = [latent] + [with_map(latent, level, e + step * b) for b in basis]
    images = decode(model, shifted).flatten(1).double()
    return ((images[1:] - images[0]) / step).T


def level_directions(
    model, latent: Latent, level: int, k: int = 4, step: float = STEP
) -> LevelDirections:
    """The ``k`` unit directions of ``e_level`` that move the image most (see module doc).

    The sign of each is fixed so that its largest-magnitude entry is positive, so the same
    latent always gives the same sliders.
    """
    if not 1 <= level <= latent.levels:
        raise UDPMError(f"level must be in 1..{latent.levels}, got {level}")
    e = latent.noises[level - 1]
    if not 1 <= k <= e.numel():
        raise UDPMError(f"the number of directions must be in 1..{e.numel()}, got {k}")
    _, s, vh = torch.linalg.svd(jacobian(model, latent, level, step), full_matrices=False)
    v = vh[:k]
    peak = v.abs().argmax(1)
    v = v * v.gather(1, peak[:, None]).sign()
    return LevelDirections(level, v.float().view(k, *e.shape), s[:k].float())


def move(latent: Latent, directions: list[LevelDirections], values: dict) -> Latent:
    """``e_l + Σ_k t_{l,k} v_{l,k}`` for each level ``l`` in ``values`` (``{l: [t_1, ..]}``).

    All-zero values leave a map untouched, so the result decodes to the original image bit
    for bit.
    """
    if not any(any(t) for t in values.values()):
        return latent
    maps = list(latent.noises)
    for d in directions:
        t = values.get(d.level)
        if t is None or not any(t):
            continue
        t = torch.as_tensor(t, dtype=torch.float32)
        maps[d.level - 1] = maps[d.level - 1] + torch.einsum("k,k...->...", t, d.directions)
    return latent.with_noises(maps)
