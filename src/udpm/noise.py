"""One seeded-noise source for every sampler: the latent of an image is its noise maps.

A sampler consumes standard normal maps in a fixed order (UDPM: ``e_1..e_L``; DDPM/DDIM:
``x_T, z_1, ..``). Image ``i`` of a batch draws its maps, in that order, from its own CPU
generator seeded ``seed + i`` (as EDM does), so an image does not depend on the batch size,
the number of processes or the device. Given explicit maps, sampling is deterministic and
the maps *are* the image's latent: the latent tools edit them and sample again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from udpm.errors import UDPMError


class NoiseSource:
    """Hands out noise maps in order: from ``noises``, or drawn from per-image generators.

    Args:
        n: batch size, when drawing; image ``i`` uses seed ``seed + i``.
        seed: the first image's seed.
        noises: the explicit latent, a sequence of (N, ...) tensors; overrides ``n``/``seed``.
        device: where the maps are returned (drawn on the CPU, then moved).
    """

    def __init__(
        self,
        n: int | None = None,
        seed: int = 0,
        noises: Sequence[torch.Tensor] | None = None,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.count = 0  # maps handed out so far
        if noises is not None:
            self.maps = list(noises)
            if not self.maps:
                raise UDPMError("the latent holds no noise maps")
            self.n = int(self.maps[0].shape[0])
            self.generators = None
        else:
            if n is None or n < 1:
                raise UDPMError(f"give a batch size n >= 1 or explicit noise maps, got n={n}")
            self.n, self.maps = int(n), None
            self.generators = [torch.Generator().manual_seed(int(seed) + i) for i in range(n)]

    @property
    def explicit(self) -> bool:
        return self.maps is not None

    def next(self, shape: Sequence[int]) -> torch.Tensor:
        """The next map, (N, *shape) float32 on ``device``; ``shape`` is one image's."""
        shape = tuple(int(s) for s in shape)
        if self.maps is not None:
            if self.count >= len(self.maps):
                raise UDPMError(
                    f"the latent has {len(self.maps)} noise maps; the sampler needs more"
                )
            noise = self.maps[self.count]
            if tuple(noise.shape) != (self.n, *shape):
                raise UDPMError(
                    f"noise map {self.count} has shape {tuple(noise.shape)}, "
                    f"expected {(self.n, *shape)}"
                )
        else:
            noise = torch.stack([torch.randn(shape, generator=g) for g in self.generators])
        self.count += 1
        return noise.to(device=self.device, dtype=torch.float32)

    def check_used(self, needed: int, exact: bool = True, what: str = "") -> None:
        """Raise unless an explicit latent has ``needed`` maps (at least, if not ``exact``)."""
        if self.maps is None:
            return
        have = len(self.maps)
        if have < needed or (exact and have != needed):
            raise UDPMError(f"expected {needed} noise maps{what}, got {have}")


def seeded_noise(shapes: Sequence[Sequence[int]], seeds: Sequence[int]) -> list[torch.Tensor]:
    """The maps ``NoiseSource`` would draw for ``shapes`` (one image's shape each), eagerly.

    Returns one (N, *shape) CPU tensor per shape, N = ``len(seeds)``; image ``i``'s maps come
    from the generator seeded ``seeds[i]``, in the order of ``shapes``.
    """
    per_image = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        per_image.append([torch.randn(tuple(shape), generator=gen) for shape in shapes])
    return [torch.stack([maps[k] for maps in per_image]) for k in range(len(shapes))]


def check_shapes(noises: Sequence[torch.Tensor], shapes: Sequence[Sequence[int]]) -> int:
    """Raise a one-line error unless ``noises`` match ``shapes``; returns the batch size."""
    if len(noises) != len(shapes):
        raise UDPMError(f"expected {len(shapes)} noise maps, got {len(noises)}")
    n = int(noises[0].shape[0])
    for k, (noise, shape) in enumerate(zip(noises, shapes)):
        if tuple(noise.shape) != (n, *tuple(shape)):
            raise UDPMError(
                f"noise map {k + 1} has shape {tuple(noise.shape)}, expected {(n, *tuple(shape))}"
            )
    return n
