"""Latent diffusion's first stage: the KL autoencoder and its patch discriminator.

The layout follows CompVis' ``Encoder``/``Decoder`` (``ldm/modules/diffusionmodules/model.py``;
Rombach et al. 2022, Appendix G): a 3x3 stem, per level ``num_blocks`` residual blocks
(GroupNorm, SiLU, 3x3 convs) and a stride-2 convolution between levels, a middle of
block-attention-block, then GroupNorm, SiLU and a 3x3 conv to ``2 z`` channels (mean and
log-variance), followed by a 1x1 "quant" conv. The decoder mirrors it with nearest-neighbour
upsampling and ``num_blocks + 1`` blocks per level. GroupNorm has up to 32 groups of at
least 4 channels (``udpm.networks.layers.group_norm``; CompVis: always 32), so narrow CPU
widths work. With ``L = len(channel_mult)`` levels the
downsampling factor is ``f = 2^(L-1)``: an (N, C, H, W) image becomes an (N, z, H/f, W/f)
latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from udpm.errors import UDPMError
from udpm.networks.layers import group_norm
from udpm.objectives.autoencoder import DiagonalGaussian

# Constructor arguments of AutoencoderKL. "kl-f4" is CompVis' autoencoder_kl_64x64x3 (for
# 256 px; f = 4, z = 3, width 128, mult (1, 2, 4), 2 blocks); the CPU one is a small f = 4.
AE_PRESETS: dict[str, dict] = {
    "kl-f4": dict(
        image_channels=3,
        latent_channels=3,
        model_channels=128,
        channel_mult=(1, 2, 4),
        num_blocks=2,
        dropout=0.0,
    ),
    "emoji32-cpu-ae": dict(
        image_channels=3,
        latent_channels=4,
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_blocks=1,
        dropout=0.0,
    ),
}


class ResnetBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))))))``, with a 1x1 shortcut when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels, as CompVis' ``AttnBlock``."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, HW, C)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


def _middle(ch: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        ResnetBlock(ch, ch, dropout), AttentionBlock(ch), ResnetBlock(ch, ch, dropout)
    )


class Encoder(nn.Module):
    """(N, C, H, W) -> (N, 2z, H/f, W/f) moments (mean and log-variance)."""

    def __init__(self, image_channels, latent_channels, model_channels, channel_mult, num_blocks,
                 dropout):  # fmt: skip
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        layers, ch = [nn.Conv2d(image_channels, model_channels, 3, padding=1)], model_channels
        for level, width in enumerate(widths):
            for _ in range(num_blocks):
                layers.append(ResnetBlock(ch, width, dropout))
                ch = width
            if level < len(widths) - 1:  # CompVis pad (0, 1, 0, 1), then a stride-2 3x3 conv
                layers += [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(ch, ch, 3, stride=2)]
        layers += [_middle(ch, dropout), group_norm(ch), nn.SiLU()]
        layers.append(nn.Conv2d(ch, 2 * latent_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """(N, z, h, w) -> (N, C, h f, w f)."""

    def __init__(self, image_channels, latent_channels, model_channels, channel_mult, num_blocks,
                 dropout):  # fmt: skip
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        ch = widths[-1]
        layers = [nn.Conv2d(latent_channels, ch, 3, padding=1), _middle(ch, dropout)]
        for level in reversed(range(len(widths))):
            for _ in range(num_blocks + 1):
                layers.append(ResnetBlock(ch, widths[level], dropout))
                ch = widths[level]
            if level > 0:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"),
                           nn.Conv2d(ch, ch, 3, padding=1)]  # fmt: skip
        layers += [group_norm(ch), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        self.out_conv = nn.Conv2d(ch, image_channels, 3, padding=1)  # the adaptive weight's layer

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_conv(self.layers(z))


class AutoencoderKL(nn.Module):
    """The KL-regularised autoencoder ``x -> q(z | x) -> x̂`` (Rombach et al. 2022, Sec. 3.1).

    Args:
        image_channels: C of the images.
        latent_channels: z, channels of the latent.
        model_channels: base width; level ``i`` has ``model_channels * channel_mult[i]``.
        channel_mult: width multiplier per level; ``f = 2^(len - 1)``.
        num_blocks: residual blocks per encoder level (the decoder has one more).
        dropout: dropout probability inside the residual blocks.
    """

    def __init__(
        self,
        image_channels: int = 3,
        latent_channels: int = 4,
        model_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_blocks: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not channel_mult or latent_channels < 1:
            raise UDPMError("an autoencoder needs at least one level and one latent channel")
        args = (image_channels, latent_channels, model_channels, tuple(channel_mult), num_blocks)
        self.image_channels, self.latent_channels = image_channels, latent_channels
        self.factor = 2 ** (len(channel_mult) - 1)
        self.encoder, self.decoder = Encoder(*args, dropout), Decoder(*args, dropout)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)

    def latent_shape(self, image_shape) -> tuple[int, int, int]:
        """``(z, H/f, W/f)`` for one ``(C, H, W)`` image; raises unless ``f`` divides H and W."""
        c, h, w = image_shape
        if h % self.factor or w % self.factor:
            raise UDPMError(
                f"image size {h}x{w} is not divisible by the autoencoder's f = {self.factor}"
            )
        return (self.latent_channels, h // self.factor, w // self.factor)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """``q(z | x)`` for images (N, C, H, W) in [-1, 1]."""
        self.latent_shape(x.shape[1:])
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) from latents (N, z, h, w) (unscaled: the encoder's own units)."""
        return self.decoder(self.post_quant_conv(z))

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.out_conv.weight

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """``(x̂, mean, logvar)``: a reconstruction from ``z ~ q(z | x)`` drawn with ``noise``."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(noise)), posterior.mean, posterior.logvar


class PatchDiscriminator(nn.Module):
    """The pix2pix PatchGAN (Isola et al. 2017) of CompVis' ``NLayerDiscriminator``.

    4x4 convs, stride 2 for ``num_layers`` layers then stride 1, LeakyReLU(0.2); the norm is
    GroupNorm here instead of BatchNorm (no batch statistics to keep equal across ranks).
    (N, C, H, W) -> (N, 1, h, w) logits, one per patch.
    """

    def __init__(self, image_channels: int = 3, model_channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(image_channels, model_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = model_channels
        for i in range(1, num_layers + 1):
            out, stride = model_channels * min(2**i, 8), 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(ch, out, 4, stride, 1, bias=False),
                group_norm(out),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
