"""Latent-space tools: the latent of a UDPM image is its ``L`` noise maps ``e_1..e_L``.

>>> import udpm
>>> from udpm import latent
>>> model = udpm.load()
>>> a, b = latent.Latent.from_seed(model, 1), latent.Latent.from_seed(model, 2)
>>> row = latent.interpolate(model, [a, b], steps=8)      # (8, 3, 32, 32)
>>> a.save("a.latent.safetensors")                         # and Latent.load(path, model)

Modules: :mod:`~udpm.latent.mixing` (pure, variance-preserving arithmetic on noise maps),
:mod:`~udpm.latent.core` (the :class:`Latent` object and file, decoding),
:mod:`~udpm.latent.tools` (interpolate, swap, perturb, perturbation PCA).
"""

from udpm.latent.core import (
    Latent,
    decode,
    latent_path,
    model_hash,
    require_udpm,
    resolve_latent,
    save_latents_for,
)
from udpm.latent.mixing import corner_weights, grid_coordinates, mix_corners, mix_pair, slerp
from udpm.latent.tools import (
    PCAResult,
    image_pca,
    interpolate,
    interpolation_latents,
    perturb,
    perturb_latents,
    perturbation_pca,
    swap,
    swap_latents,
    variance_report,
)

__all__ = [
    "Latent",
    "PCAResult",
    "corner_weights",
    "decode",
    "grid_coordinates",
    "image_pca",
    "interpolate",
    "interpolation_latents",
    "latent_path",
    "mix_corners",
    "mix_pair",
    "model_hash",
    "perturb",
    "perturb_latents",
    "perturbation_pca",
    "require_udpm",
    "resolve_latent",
    "save_latents_for",
    "slerp",
    "swap",
    "swap_latents",
    "variance_report",
]
