"""UDPM sampling (Algorithm 2 with the exact posterior): ``L`` network calls per image.

The latent of an image is its ``L`` noise maps ``e_1..e_L``; ``e_l`` has level ``l``'s size
and makes ``x_l``: ``x_L = s_L e_L``, and ``x_{l-1}`` is the exact posterior draw with
``z = e_{l-1}``. Given the maps, sampling is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from udpm.noise import NoiseSource, check_shapes, seeded_noise
from udpm.processes.upsampling import UpsamplingProcess


def level_shapes(process: UpsamplingProcess, image_shape: Sequence[int]) -> list[tuple]:
    """Shapes ``(C, h, w)`` of ``x_1..x_L`` for an image of shape ``(C, H, W)``."""
    channels, height, width = image_shape
    process.check_resolution(height)
    process.check_resolution(width)
    f = process.factor
    return [(channels, height // f**l, width // f**l) for l in range(1, process.levels + 1)]


def seeded_noises(
    process: UpsamplingProcess, image_shape: Sequence[int], seeds: Sequence[int]
) -> list[torch.Tensor]:
    """The ``L`` noise maps ``[e_1, .., e_L]`` for a batch, one CPU generator per image seed.

    Each image's maps depend only on its own seed (:mod:`udpm.noise`), so images do not
    change with the batch size, the number of processes or the device.
    """
    return seeded_noise(level_shapes(process, image_shape), seeds)


def check_noises(
    process: UpsamplingProcess, noises: Sequence[torch.Tensor], image_shape: Sequence[int]
) -> None:
    """Raise a clear error unless ``noises`` are ``L`` maps of the right shapes."""
    check_shapes(noises, level_shapes(process, image_shape))


def preview(process: UpsamplingProcess, h: torch.Tensor, l: int) -> torch.Tensor:
    """Map ``h ≈ H^{l-1} x_0`` back to full size with ``(H⁺)^{l-1}`` (display only)."""
    for _ in range(l - 1):
        h = process.operator.pinv(h)
    return h


@torch.no_grad()
def sample_udpm(
    network: torch.nn.Module,
    process: UpsamplingProcess,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    *,
    return_levels: bool = False,
):
    """Generate images with ``L`` network calls (UDPM paper, Algorithm 2, exact posterior).

    Args:
        network: ``f(x_l, t, class_labels)`` predicting ``H^{l-1} x_0`` one level up, with
            ``t = process.network_time(l)`` (N,).
        process: the :class:`UpsamplingProcess` the network was trained with.
        image_shape: ``(C, H, W)`` of the images.
        n: batch size; image ``i`` uses seed ``seed + i``. Ignored when ``noises`` is given.
        seed: first seed.
        noises: the explicit latent, ``[e_1, .., e_L]`` with ``e_l`` of shape
            ``(N, C, H/γ^l, W/γ^l)``; overrides ``n`` and ``seed``.
        class_labels: LongTensor (N,) for class-conditional networks.
        callback: ``callback(calls_done, L)`` after every network call.
        device: where to run; defaults to the network's device.
        return_levels: also return the per-level predictions mapped to full size,
            ``[preview_L, .., preview_1]`` (the last is the image itself).

    Returns:
        images (N, C, H, W), and the list of previews when ``return_levels``.
    """
    if device is None:
        device = next(network.parameters()).device
    shapes = level_shapes(process, image_shape)
    if noises is not None:
        check_noises(process, noises, image_shape)
    source = NoiseSource(n, seed, noises, device)
    noises = [source.next(shape) for shape in shapes]  # e_1..e_L, in the seeded order
    if class_labels is not None:
        class_labels = class_labels.to(device)
    L = process.levels
    x = process.prior_sample(noises[L - 1])
    previews = []
    for l in range(L, 0, -1):
        t = process.network_time(l).to(device).expand(x.shape[0])
        h = network(x, t, class_labels)
        if return_levels:
            previews.append(preview(process, h, l))
        # At l = 1 the posterior is a point mass: x_0 is the network output itself.
        x = process.posterior_sample(x, h, l, noise=noises[l - 2] if l > 1 else None)
        if callback is not None:
            callback(L - l + 1, L)
    return (x, previews) if return_levels else x
