"""Building blocks shared by the U-Net and the discriminator.

They follow the NCSN++ / DDPM++ blocks of Song et al. as re-implemented in EDM's SongUNet:
GroupNorm, a residual block that takes an embedding vector, FIR resampling with the
``[1, 3, 3, 1]`` filter, single-head self-attention, and Fourier or sinusoidal features of
a scalar time. Shapes: images are (N, C, H, W), embeddings (N, E).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from udpm.errors import UDPMError

SKIP_SCALE = 1 / math.sqrt(2)  # keeps the variance of (skip + residual) near that of one input


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (buffers excluded); works on meta tensors."""
    return sum(p.numel() for p in module.parameters())


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels; the count divides ``channels``."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


def conv2d(in_ch: int, out_ch: int, kernel: int, zero: bool = False) -> nn.Conv2d:
    """'Same' convolution, Xavier-uniform (as EDM) or all-zero weights; zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    _init(conv, zero)
    return conv


def linear(in_features: int, out_features: int, zero: bool = False) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    _init(layer, zero)
    return layer


def _init(layer: nn.Module, zero: bool) -> None:
    # Zero weights make a residual branch start as the identity, and the output start at 0.
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


class Resample(nn.Module):
    """Halve or double H and W with the separable FIR filter ``[1, 3, 3, 1]`` (NCSN++).

    Down: blur then keep every other pixel, (N, C, H, W) -> (N, C, H/2, W/2); a 2x2 input
    gives 1x1. Up: the transposed operation with gain 4, (N, C, H, W) -> (N, C, 2H, 2W).
    """

    def __init__(self, mode: str):
        super().__init__()
        if mode not in ("up", "down"):
            raise UDPMError(f"resampling mode must be 'up' or 'down', got {mode!r}")
        self.mode = mode
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("filter", torch.outer(taps, taps) / 64, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        f = self.filter.to(x.dtype).expand(channels, 1, 4, 4)
        if self.mode == "down":
            return F.conv2d(x, f, stride=2, padding=1, groups=channels)
        return F.conv_transpose2d(x, f * 4, stride=2, padding=1, groups=channels)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar: ``[cos(2π f t), sin(2π f t)]``, ``f ~ N(0, scale²)``.

    The frequencies are a persistent buffer, so a reloaded network embeds t identically.
    """

    def __init__(self, channels: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(t, 2 * math.pi * self.freqs.to(t.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class PositionalFeatures(nn.Module):
    """Transformer-style sinusoids of ``1000 t``: t in [0, 1] is read on DDPM's step scale."""

    def __init__(self, channels: int, max_positions: int = 10000, time_scale: float = 1000.0):
        super().__init__()
        exponents = torch.arange(channels // 2, dtype=torch.float32) / (channels // 2)
        self.register_buffer("freqs", max_positions ** (-exponents), persistent=False)
        self.time_scale = time_scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(t * self.time_scale, self.freqs.to(t.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class TimeEmbedding(nn.Module):
    """t (and optionally a class) -> an (N, E) vector fed to every residual block.

    ``features(t) [+ class embedding]`` then a two-layer SiLU MLP, as in EDM's mapping network.

    Args:
        kind: "fourier" (NCSN++) or "positional" (DDPM++) features of t.
        feature_channels: number of Fourier / sinusoidal features.
        embedding_channels: width E of the output vector.
        num_classes: > 0 adds a learnt per-class vector to the features.
    """

    def __init__(self, kind: str, feature_channels: int, embedding_channels: int, num_classes=0):
        super().__init__()
        if kind == "fourier":
            self.features = FourierFeatures(feature_channels)
        elif kind == "positional":
            self.features = PositionalFeatures(feature_channels)
        else:
            raise UDPMError(f"embedding must be 'fourier' or 'positional', got {kind!r}")
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes, feature_channels) if num_classes else None
        self.layer0 = linear(feature_channels, embedding_channels)
        self.layer1 = linear(embedding_channels, embedding_channels)

    def forward(self, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.features(t)
        if self.label is not None:
            if class_labels is None:
                raise UDPMError(f"this network has {self.num_classes} classes: pass class_labels")
            emb = emb + self.label(class_labels)
        elif class_labels is not None:
            raise UDPMError("class_labels given to a network built with num_classes=0")
        return F.silu(self.layer1(F.silu(self.layer0(emb))))


class LatentMapping(nn.Module):
    """DDGAN's latent ``z`` -> an (N, E) vector added to the time embedding of every block.

    As NVlabs' NCSN++ generator (``z_transform``): the pixel norm ``z / rms(z)`` (Karras et
    al. 2018), then ``layers`` linear layers with SiLU between them (StyleGAN's mapping
    network); the last layer is linear, like the time embedding's input to the blocks.

    Args:
        z_dim: width of ``z`` (100 in DDGAN).
        embedding_channels: width E of the output.
        layers: number of linear layers (NVlabs: 4 for CIFAR-10).
    """

    def __init__(self, z_dim: int, embedding_channels: int, layers: int = 2):
        super().__init__()
        if z_dim < 1 or layers < 1:
            raise UDPMError(
                f"a latent mapping needs z_dim >= 1 and layers >= 1, got {z_dim}, {layers}"
            )
        self.z_dim = z_dim
        widths = [z_dim] + [embedding_channels] * layers
        self.layers = nn.ModuleList(linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise UDPMError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        h = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for i, layer in enumerate(self.layers):
            h = layer(h) if i == 0 else layer(F.silu(h))
        return h


def batch_times(t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """Accept a float, a 0-d or a 1-element tensor (broadcast) or N values; return (N,) float32."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise UDPMError(f"t has {t.numel()} values for a batch of {batch}")
    return t


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, added back to its input."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = conv2d(channels, 3 * channels, 1)
        self.proj = conv2d(channels, channels, 1, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(2, 3).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (N, HW, C)
        return self.proj(a.transpose(1, 2).reshape(n, c, h, w))


class ResBlock(nn.Module):
    """Pre-activation residual block conditioned on an embedding by scale and shift.

    ``h = conv0(act(norm0(resample(x))))``, then ``h = act(norm1(h) (1 + scale) + shift)``
    with ``(scale, shift) = affine(emb)``, then ``conv1(dropout(h))``; the skip path is a
    1x1 conv when the width or the size changes. The sum is scaled by ``1/sqrt(2)``, and
    likewise after the optional attention.

    Args:
        in_channels, out_channels: widths of the input and the output.
        emb_channels: width E of the embedding vector.
        resample: None, "up" (x2) or "down" (/2).
        attention: append a self-attention layer.
        dropout: dropout probability before the last conv.
        activation: "silu" (U-Net) or "leaky_relu" (slope 0.2, discriminator).
        zero_init: start the residual branches at zero (U-Net), or not (discriminator).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        resample: str | None = None,
        attention: bool = False,
        dropout: float = 0.0,
        activation: str = "silu",
        zero_init: bool = True,
    ):
        super().__init__()
        self.act = {"silu": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}[activation]()
        self.resample = Resample(resample) if resample else nn.Identity()
        self.norm0 = group_norm(in_channels)
        self.conv0 = conv2d(in_channels, out_channels, 3)
        self.affine = linear(emb_channels, 2 * out_channels)
        self.norm1 = group_norm(out_channels)
        self.dropout = dropout
        self.conv1 = conv2d(out_channels, out_channels, 3, zero=zero_init)
        changes = in_channels != out_channels or resample is not None
        self.skip = conv2d(in_channels, out_channels, 1) if changes else nn.Identity()
        self.attention = SelfAttention(out_channels) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(self.resample(self.act(self.norm0(x))))
        scale, shift = self.affine(emb)[:, :, None, None].to(h.dtype).chunk(2, dim=1)
        h = self.act(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + self.skip(self.resample(x))) * SKIP_SCALE
        if self.attention is not None:
            x = (x + self.attention(x)) * SKIP_SCALE
        return x
