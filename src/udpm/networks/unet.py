"""The U-Net f_θ shared by all UDPM levels (and, with ``out_factor=1``, the diffusion baselines).

An NCSN++-style U-Net in the manner of EDM's SongUNet: Fourier features of t and a two-layer
MLP, residual blocks conditioned on that embedding, FIR ``[1, 3, 3, 1]`` resampling, a
"residual" encoder path that feeds the input image into each downsampled level, and
self-attention at chosen sizes. UDPM's change is at the end: the last conv emits
``C * out_factor²`` channels and a pixel shuffle turns them into an image ``out_factor``
times larger, so the costly passes run at the small input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from udpm.errors import UDPMError
from udpm.networks.layers import (
    SKIP_SCALE,
    LatentMapping,
    Resample,
    ResBlock,
    TimeEmbedding,
    batch_times,
    conv2d,
    group_norm,
)

# Constructor arguments of the paper's networks and of a small CPU model. "resolution" is
# the largest size the net sees: for UDPM that is level 1, half the image size.
UNET_PRESETS: dict[str, dict] = {
    # CIFAR-10 32px, class-conditional: runs at 16, 8, 4. Attention at 8 and 4 (the
    # paper's list also names 2, a size this three-level net never has). About 57.7M.
    "cifar10": dict(
        image_channels=3,
        model_channels=128,
        channel_mult=(2, 2, 2),
        num_blocks=4,
        attn_resolutions=(8, 4, 2),
        dropout=0.13,  # EDM's CIFAR-10 value; the UDPM paper does not state its own
        resolution=16,
        num_classes=10,
        out_factor=2,
        embedding="fourier",
        embedding_channels=256,
    ),
    # 64px faces: runs at 32, 16, 8; four U-Net levels 32..4. About 65.4M.
    "ffhq64": dict(
        image_channels=3,
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_blocks=4,
        attn_resolutions=(16, 8, 4),
        dropout=0.05,  # EDM's FFHQ-64 value
        resolution=32,
        num_classes=0,
        out_factor=2,
        embedding="fourier",
        embedding_channels=256,
    ),
    "afhqv2-64": dict(
        image_channels=3,
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_blocks=4,
        attn_resolutions=(16, 8, 4),
        dropout=0.25,  # EDM's AFHQv2-64 value
        resolution=32,
        num_classes=0,
        out_factor=2,
        embedding="fourier",
        embedding_channels=256,
    ),
    # Small enough to train on two CPU cores: 32px emoji, runs at 16, 8, 4.
    "emoji32-cpu": dict(
        image_channels=3,
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_blocks=2,
        attn_resolutions=(4,),
        dropout=0.0,
        resolution=16,
        num_classes=0,
        out_factor=2,
        embedding="fourier",
        embedding_channels=128,
    ),
}


class UNet(nn.Module):
    """f_θ: (N, C, H, W) at any size divisible by ``2**(len(channel_mult) - 1)`` ->
    (N, C, H * out_factor, W * out_factor).

    Args:
        image_channels: C, channels of the input and of the output image.
        model_channels: base width; level ``i`` has ``model_channels * channel_mult[i]``.
        channel_mult: width multiplier per U-Net level; each level after the first halves
            the size, so an input of size ``2**(len - 1)`` reaches 1x1 at the bottom.
        num_blocks: residual blocks per level in the encoder (the decoder has one more).
        attn_resolutions: attention is placed, once and for all, at the levels whose
            nominal size ``resolution >> level`` is listed here, plus the first bottom
            block. The same layers run whatever the actual input size.
        dropout: dropout probability inside the residual blocks.
        resolution: nominal (largest) input size, used only to place attention.
        num_classes: number of class labels; 0 means unconditional.
        out_factor: the pixel-shuffle factor γ; 1 gives a plain same-size U-Net.
        embedding: features of t: "fourier" (NCSN++) or "positional" (DDPM++).
        embedding_channels: width of the t / class embedding vector; None means
            ``2 * model_channels``. With scale-and-shift conditioning this width keeps the
            parameter count of EDM's additive, ``4 * model_channels`` design.
        z_dim: width of a latent input ``z`` (DDGAN's generator ``G(x_t, z, t)``), mapped by
            :class:`LatentMapping` and added to the time embedding; 0 (default) means no
            ``z`` and no extra parameters, so older checkpoints load unchanged.
        z_layers: linear layers of that mapping.
        out_activation: None, or "tanh" to bound the output to (-1, 1) (DDGAN's x̂_0).
        in_channels: channels of the input when they differ from the output's (VDM feeds
            the image with its Fourier features); None means ``image_channels``.
    """

    def __init__(
        self,
        image_channels: int = 3,
        model_channels: int = 128,
        channel_mult: tuple[int, ...] = (2, 2, 2),
        num_blocks: int = 4,
        attn_resolutions: tuple[int, ...] = (8, 4, 2),
        dropout: float = 0.1,
        resolution: int = 16,
        num_classes: int = 0,
        out_factor: int = 2,
        embedding: str = "fourier",
        embedding_channels: int | None = None,
        z_dim: int = 0,
        z_layers: int = 2,
        out_activation: str | None = None,
        in_channels: int | None = None,
    ):
        super().__init__()
        if out_factor < 1:
            raise UDPMError(f"out_factor must be >= 1, got {out_factor}")
        if out_activation not in (None, "tanh"):
            raise UDPMError(f"out_activation must be None or 'tanh', got {out_activation!r}")
        self.out_activation = out_activation
        self.image_channels = image_channels
        self.in_channels = in_channels or image_channels
        self.out_factor = out_factor
        self.num_levels = len(channel_mult)
        emb_ch = embedding_channels or 2 * model_channels
        self.embed = TimeEmbedding(embedding, 2 * model_channels, emb_ch, num_classes)
        self.z_dim = z_dim
        self.z_map = LatentMapping(z_dim, emb_ch, z_layers) if z_dim else None
        block = dict(emb_channels=emb_ch, dropout=dropout)
        widths = [model_channels * m for m in channel_mult]
        attn = [(resolution >> level) in attn_resolutions for level in range(self.num_levels)]

        # Encoder. `skip_widths` records what each step pushes for the decoder to pop.
        self.stem = conv2d(self.in_channels, model_channels, 3)
        self.down = nn.ModuleList()  # per level > 0: (N, c, H, W) -> (N, c, H/2, W/2)
        self.aux = nn.ModuleList()  # per level > 0: the residual image path of NCSN++
        self.enc = nn.ModuleList()
        skip_widths, ch, aux_ch = [model_channels], model_channels, self.in_channels
        for level, width in enumerate(widths):
            if level > 0:
                self.down.append(ResBlock(ch, ch, resample="down", **block))
                self.aux.append(nn.Sequential(Resample("down"), conv2d(aux_ch, ch, 3)))
                aux_ch = ch
                skip_widths.append(ch)
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(ResBlock(ch, width, attention=attn[level], **block))
                ch = width
                skip_widths.append(ch)
            self.enc.append(blocks)

        # Bottom, then the decoder from the smallest level up, popping one skip per block.
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, attention=True, **block), ResBlock(ch, ch, **block)]
        )
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            if level < self.num_levels - 1:
                self.up.append(ResBlock(ch, ch, resample="up", **block))
            blocks = nn.ModuleList()
            for idx in range(num_blocks + 1):
                last = idx == num_blocks
                in_ch = ch + skip_widths.pop()
                blocks.append(
                    ResBlock(in_ch, widths[level], attention=last and attn[level], **block)
                )
                ch = widths[level]
            self.dec.append(blocks)
        self.out_norm = group_norm(ch)
        self.out_conv = conv2d(ch, image_channels * out_factor**2, 3, zero=True)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (N, C, H, W); t: (N,) or a scalar, in [0, 1]; class_labels: (N,) long or None;
        z: (N, z_dim) when the net has a latent input, else None.

        Returns (N, C, H * out_factor, W * out_factor).
        """
        self._check_size(x)
        emb = self.embed(batch_times(t, x.shape[0], x.device), class_labels)
        if (z is None) != (self.z_map is None):
            raise UDPMError(
                f"this network has z_dim={self.z_dim}; "
                f"z {'missing' if z is None else 'not expected'}"
            )
        if z is not None:
            emb = emb + self.z_map(z.to(emb.dtype))

        h = self.stem(x)
        skips, aux = [h], x
        for level, blocks in enumerate(self.enc):
            if level > 0:
                h = self.down[level - 1](h, emb)
                # NCSN++ "residual" encoder: the input, downsampled, joins each level.
                h = aux = (h + self.aux[level - 1](aux)) * SKIP_SCALE
                skips.append(h)
            for block in blocks:
                h = block(h, emb)
                skips.append(h)

        for block in self.mid:
            h = block(h, emb)
        for i, blocks in enumerate(self.dec):
            if i > 0:
                h = self.up[i - 1](h, emb)
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)

        h = self.out_conv(F.silu(self.out_norm(h)))
        if self.out_activation == "tanh":
            h = torch.tanh(h)
        return F.pixel_shuffle(h, self.out_factor) if self.out_factor > 1 else h

    def _check_size(self, x: torch.Tensor) -> None:
        multiple = 2 ** (self.num_levels - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise UDPMError(f"expected (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise UDPMError(
                f"input size {tuple(x.shape[2:])} is not divisible by {multiple}, "
                f"which this {self.num_levels}-level U-Net needs"
            )
