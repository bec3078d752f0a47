"""Latent diffusion's generator: a denoising U-Net over the latent of a frozen autoencoder.

One ``nn.Module`` owns both networks and the latent's scale, so a model file (one
``state_dict``) carries everything sampling needs (Rombach et al. 2022, Sec. 3.2).

The scale factor. The encoder's latents have whatever spread the KL term (weighted 1e-6)
left them, often far from unit variance, while the diffusion assumes data of about unit
variance (its ``x_T ~ N(0, I)``). Rombach et al. (Sec. 4.3.2 and Appendix G) therefore
rescale: ``z' = s (z - m)`` with ``s = 1/std(z)`` measured once, on the first training batch
of stage 2 (CompVis' ``scale_by_std``; Stable Diffusion's 0.18215 is such an ``s``). The
shift by the mean ``m`` is Esser et al.'s (2024) ``shift_factor``; CompVis' latents are near
zero-mean and skip it. The diffusion is trained on and samples ``z'``; decoding undoes it,
``x = D(z'/s + m)``. ``s`` and ``m`` are buffers, saved in the model file with the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from udpm.errors import UDPMError


class LatentDiffusion(nn.Module):
    """``forward`` is the latent U-Net; ``encode``/``decode`` map images to scaled latents.

    Args:
        unet: ``unet(z_t, time, class_labels)`` on latents (N, z, h, w); predicts ``ε``.
        autoencoder: an ``AutoencoderKL`` (or anything with ``encode(x) -> DiagonalGaussian``,
            ``decode(z)``, ``latent_shape(image_shape)``, ``latent_channels``). It is frozen:
            no gradients, always in eval mode.

    Buffers: ``latent_scale`` (``s``), ``latent_mean`` (``m``), ``latent_measured`` (1 once
    :meth:`measure_latent` ran; until then ``s = 1``, ``m = 0``).
    """

    def __init__(self, unet: nn.Module, autoencoder: nn.Module):
        super().__init__()
        self.unet, self.autoencoder = unet, autoencoder.requires_grad_(False).eval()
        # float32: model files store floats as float32 (``udpm.checkpoint.load_model``).
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("latent_mean", torch.zeros(()))
        self.register_buffer("latent_measured", torch.zeros((), dtype=torch.uint8))

    def train(self, mode: bool = True) -> LatentDiffusion:
        super().train(mode)
        self.autoencoder.eval()  # frozen: its dropout (if any) never runs
        return self

    @property
    def in_channels(self) -> int:
        """Channels of what the U-Net denoises (the latent's), for ``udpm bench``."""
        return self.autoencoder.latent_channels

    def latent_shape(self, image_shape) -> tuple[int, int, int]:
        return tuple(self.autoencoder.latent_shape(image_shape))

    def forward(self, z_t: torch.Tensor, time, class_labels=None) -> torch.Tensor:
        return self.unet(z_t, time, class_labels)

    @torch.no_grad()
    def raw_latent(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``z ~ q(z | x)`` drawn with ``noise`` (CompVis' ``get_first_stage_encoding``)."""
        return self.autoencoder.encode(x).sample(noise)

    @torch.no_grad()
    def measure_latent(self, sums: torch.Tensor) -> None:
        """Set ``m`` and ``s = 1/std`` from ``sums = [count, Σ z, Σ z²]`` (float64).

        The caller sums over the whole global batch (every rank alike), so each process
        sets the same numbers.
        """
        count, total, squares = (float(v) for v in sums)
        mean = total / count
        var = (squares - count * mean**2) / (count - 1)  # torch.std's unbiased estimate
        if not var > 0:
            raise UDPMError("the autoencoder's latents have no spread; cannot scale them")
        self.latent_mean.fill_(mean)
        self.latent_scale.fill_(var**-0.5)
        self.latent_measured.fill_(1)

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        """``z' = s (z - m)``."""
        return (z - self.latent_mean) * self.latent_scale

    def unscale(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """``z = z'/s + m``."""
        return z_scaled / self.latent_scale + self.latent_mean

    @torch.no_grad()
    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latents ``z'`` (N, z, h, w) of images (N, C, H, W)."""
        return self.scale(self.raw_latent(x, noise))

    @torch.no_grad()
    def decode(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """Images from scaled latents: ``D(z'/s + m)``."""
        return self.autoencoder.decode(self.unscale(z_scaled))


def latent_sums(z: torch.Tensor) -> torch.Tensor:
    """``[count, Σ z, Σ z²]`` in float64, to be summed over ranks for :meth:`measure_latent`."""
    z = z.double()
    return torch.stack([torch.tensor(float(z.numel()), dtype=torch.float64, device=z.device),
                        z.sum(), z.pow(2).sum()])  # fmt: skip
