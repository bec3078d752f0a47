"""DDGAN sampling (Xiao et al. 2022, Sec. 4; NVlabs ``test_ddgan.py: sample_from_model``).

``x_T ~ N(0, I)``; for ``t = T..1``: ``x̂_0 = G(x_t, z_t, t)`` with a fresh ``z_t ~ N(0, I)``,
then ``x_{t-1} ~ q(x_{t-1} | x_t, x̂_0)``, the Gaussian posterior (a point mass at ``t = 1``).
``T`` network calls per image.

The latent of an image is every map the chain consumes, in this order (paper steps):

    x_T, z_T, ε_T, z_{T-1}, ε_{T-1}, .., z_2, ε_2, z_1

``z_t`` has shape ``(z_dim,)`` and the posterior noise ``ε_t`` the image's shape; there are
``2T`` maps (``T`` without ``z``). Given them, sampling is deterministic, so the latent
tools work for DDGAN as for UDPM. Maps are drawn through :class:`udpm.noise.NoiseSource`
(image ``i`` from seed ``seed + i``), so an image does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from udpm.errors import UDPMError
from udpm.noise import NoiseSource
from udpm.objectives.ddgan import posterior_sample


def latent_shapes(image_shape: Sequence[int], T: int, z_dim: int) -> list[tuple]:
    """Shapes of one image's maps, in the order the sampler consumes them (module docstring)."""
    image_shape = tuple(int(s) for s in image_shape)
    shapes = [image_shape]
    for t in reversed(range(T)):  # indices: t is paper step t + 1
        if z_dim:
            shapes.append((int(z_dim),))
        if t > 0:
            shapes.append(image_shape)
    return shapes


@torch.no_grad()
def sample_ddgan(
    generator,
    process,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    z_dim: int = 100,
    return_levels: bool = False,
):
    """Generate images with ``T`` generator calls.

    Args:
        generator: ``G(x_t, time, class_labels, z=z) -> x̂_0`` (N, C, H, W), with
            ``time = process.network_time(t)`` (N,) and ``z`` (N, z_dim) (None if z_dim = 0).
        process: the ``DiscreteGaussianProcess`` G was trained with (DDGAN's schedule).
        image_shape: ``(C, H, W)``.
        n: batch size; image ``i`` uses seed ``seed + i``. Ignored when ``noises`` is given.
        seed: first seed.
        noises: the explicit latent (see :func:`latent_shapes`), each (N, ...).
        class_labels: LongTensor (N,) for class-conditional generators.
        callback: ``callback(step, total)`` after each of the ``T`` steps.
        device: where to run; defaults to the generator's device.
        z_dim: the latent width of G; 0 for a generator without ``z``.
        return_levels: also return ``x̂_0`` of every step, (N, T, C, H, W) (first: t = T).

    Returns:
        images (N, C, H, W) float32, and the ``x̂_0`` stack when ``return_levels``.
    """
    device = _default_device(generator) if device is None else torch.device(device)
    source = NoiseSource(n=n, seed=seed, noises=noises, device=device)
    shapes = latent_shapes(image_shape, process.num_timesteps, z_dim)
    source.check_used(len(shapes))
    x, x0_hats = run_chain(generator, process, image_shape, source, class_labels, callback, z_dim)
    return (x, torch.stack(x0_hats, dim=1)) if return_levels else x


def run_chain(generator, process, image_shape, source: NoiseSource, class_labels, callback, z_dim):
    """The chain of the module docstring on maps from ``source``; returns ``(x_0, [x̂_0, ..])``."""
    if z_dim < 0:
        raise UDPMError(f"z_dim must be >= 0, got {z_dim}")
    image_shape, T = tuple(image_shape), process.num_timesteps
    if class_labels is not None:
        class_labels = class_labels.to(source.device)
    x, x0_hats = source.next(image_shape), []  # x_T ~ N(0, I)
    for k, t in enumerate(reversed(range(T))):
        index = torch.full((source.n,), t, dtype=torch.long, device=source.device)
        z = source.next((z_dim,)) if z_dim else None
        x0_hat = generator(x, process.network_time(index), class_labels, z=z).float()
        # At t = 0 the posterior is a point mass; zeros keep the global RNG untouched.
        noise = source.next(image_shape) if t > 0 else torch.zeros_like(x)
        x = posterior_sample(process, x, x0_hat, index, noise=noise)
        x0_hats.append(x0_hat)
        if callback is not None:
            callback(k + 1, T)
    return x, x0_hats


def _default_device(network) -> torch.device:
    try:
        return next(network.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")
