"""UDPM sampling (Algorithm 2 with the exact posterior): ``L`` network calls per image.

The latent of an image is its ``L`` noise maps ``e_1..e_L``; ``e_l`` has level ``l``'s size
and makes ``x_l``: ``x_L = s_L e_L``, and ``x_{l-1}`` is the exact posterior draw with
``z = e_{l-1}``. Given the maps, sampling is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from udpm.errors import UDPMError
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
    """The ``L`` noise maps for a batch, one CPU generator per image seed.

    Each image's maps depend only on its own seed, so images do not change with the batch
    size, the number of processes or the device (EDM does the same).
    """
    shapes = level_shapes(process, image_shape)
    per_image = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        per_image.append([torch.randn(shape, generator=gen) for shape in shapes])
    return [torch.stack([maps[l] for maps in per_image]) for l in range(len(shapes))]


def check_noises(
    process: UpsamplingProcess, noises: Sequence[torch.Tensor], image_shape: Sequence[int]
) -> None:
    """Raise a clear error unless ``noises`` are ``L`` maps of the right shapes."""
    if len(noises) != process.levels:
        raise UDPMError(f"expected {process.levels} noise maps, got {len(noises)}")
    n = noises[0].shape[0]
    for l, (noise, shape) in enumerate(zip(noises, level_shapes(process, image_shape)), 1):
        if tuple(noise.shape) != (n, *shape):
            raise UDPMError(f"noise map {l} has shape {tuple(noise.shape)}, expected {(n, *shape)}")


def _network_call(network, x_l, l, process, class_labels):
    t = torch.full((x_l.shape[0],), process.level_time(l), device=x_l.device, dtype=x_l.dtype)
    return network(x_l, t, class_labels)


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
    return_levels: bool = False,
    device: torch.device | str | None = None,
):
    """Generate images with ``L`` network calls.

    Args:
        network: ``f(x_l, t, class_labels)`` predicting ``H^{l-1} x_0`` one level up.
        process: the :class:`UpsamplingProcess` the network was trained with.
        image_shape: ``(C, H, W)`` of the images.
        n: batch size; image ``i`` uses seed ``seed + i``. Ignored when ``noises`` is given.
        seed: first seed.
        noises: the explicit latent, ``[e_1, .., e_L]`` with ``e_l`` of shape
            ``(N, C, H/γ^l, W/γ^l)``; overrides ``n`` and ``seed``.
        class_labels: LongTensor (N,) for class-conditional networks.
        return_levels: also return the per-level predictions mapped to full size,
            ``[preview_L, .., preview_1]`` (the last is the image itself).
        device: where to run; defaults to the network's device.

    Returns:
        images (N, C, H, W), and the list of previews when ``return_levels``.
    """
    if device is None:
        device = next(network.parameters()).device
    if noises is None:
        if n is None or n < 1:
            raise UDPMError(f"give a batch size n >= 1 or explicit noise maps, got n={n}")
        noises = seeded_noises(process, image_shape, range(seed, seed + n))
    check_noises(process, noises, image_shape)
    noises = [e.to(device=device, dtype=torch.float32) for e in noises]
    if class_labels is not None:
        class_labels = class_labels.to(device)
    L = process.levels
    x = process.prior_sample(noises[L - 1])
    previews = []
    for l in range(L, 0, -1):
        h = _network_call(network, x, l, process, class_labels)
        if return_levels:
            previews.append(preview(process, h, l))
        # At l = 1 the posterior is a point mass: x_0 is the network output itself.
        x = process.posterior_sample(x, h, l, noise=noises[l - 2] if l > 1 else None)
    return (x, previews) if return_levels else x
