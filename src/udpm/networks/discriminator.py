"""The level-conditioned discriminator of UDPM's adversarial loss (DDGAN style).

For UDPM, D sees one image ``x_{l-1}`` (real: ``H^{l-1} x_0``, fake: the U-Net's estimate)
together with its level. DDGAN's ``D(x_{t-1}, x_t, t)`` is the same network with
``image_channels = 2C`` fed the two images' channels concatenated, its level input the
time ``network_time(t)`` and ``num_levels = 1`` (every input at full size). Layout: a 1x1 stem,
residual down-blocks conditioned on the level embedding, a minibatch standard deviation
channel, a 3x3 conv, sum-pooling over space and a linear head, plus a projection term
``<features, class embedding>`` when conditional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from udpm.errors import UDPMError
from udpm.networks.layers import ResBlock, TimeEmbedding, batch_times, conv2d, linear

# "resolution" is the image size: D sees 32, 16 and 8 for 32px data with num_levels=3.
DISC_PRESETS: dict[str, dict] = {
    # About 19M parameters, as the paper reports for CIFAR-10.
    "cifar10": dict(
        image_channels=3,
        model_channels=78,
        channel_mult=(2, 4, 8, 8),
        resolution=32,
        num_levels=3,
        num_classes=10,
        dropout=0.4,
    ),
    # About 24M parameters, as the paper reports for 64px data; one more down-block.
    "ffhq64": dict(
        image_channels=3,
        model_channels=74,
        channel_mult=(2, 4, 8, 8, 8),
        resolution=64,
        num_levels=3,
        num_classes=0,
        dropout=0.2,
    ),
    "afhqv2-64": dict(
        image_channels=3,
        model_channels=74,
        channel_mult=(2, 4, 8, 8, 8),
        resolution=64,
        num_levels=3,
        num_classes=0,
        dropout=0.3,
    ),
    "emoji32-cpu": dict(
        image_channels=3,
        model_channels=16,
        channel_mult=(1, 2, 4, 4),
        resolution=32,
        num_levels=3,
        num_classes=0,
        dropout=0.2,
    ),
}


def minibatch_std(h: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel holding the feature std within groups of samples (StyleGAN).

    It lets D see the diversity of a batch, which penalises mode collapse. Samples
    ``i, i + N/g, ...`` form a group; ``g`` is the largest divisor of N not above
    ``group_size``. (N, C, H, W) -> (N, C + 1, H, W).
    """
    n, c, height, width = h.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    groups = h.float().reshape(g, n // g, c, height, width)
    std = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N/g,)
    std = std.to(h.dtype).reshape(1, n // g, 1, 1, 1).expand(g, -1, 1, height, width)
    return torch.cat([h, std.reshape(n, 1, height, width)], dim=1)


class Discriminator(nn.Module):
    """D(x_{l-1}, t, class) -> logits (N,), for any size divisible by ``2**(len(channel_mult)-1)``.

    Args:
        image_channels: C, channels of the input image.
        model_channels: base width; stage ``i`` has ``model_channels * channel_mult[i]``.
        channel_mult: width multiplier per stage; every stage after the first halves the size.
        resolution: the image size (the largest input D sees, at level l = 1).
        num_levels: L; the smallest input, ``resolution >> (L - 1)``, must be at least
            ``2**(len(channel_mult) - 1)`` so that it reaches 1x1 or more after the stages.
        num_classes: number of class labels; 0 means unconditional.
        dropout: dropout probability inside the residual blocks.
        embedding: features of t: "positional" or "fourier".
        embedding_channels: width of the t embedding; None means ``4 * model_channels``.
    """

    def __init__(
        self,
        image_channels: int = 3,
        model_channels: int = 64,
        channel_mult: tuple[int, ...] = (2, 4, 8, 8),
        resolution: int = 32,
        num_levels: int = 3,
        num_classes: int = 0,
        dropout: float = 0.0,
        embedding: str = "positional",
        embedding_channels: int | None = None,
    ):
        super().__init__()
        smallest, downs = resolution >> (num_levels - 1), len(channel_mult) - 1
        if smallest < 2**downs:
            raise UDPMError(
                f"the smallest input ({smallest}px = {resolution} >> {num_levels - 1}) cannot go "
                f"through {downs} halvings; use a shorter channel_mult"
            )
        self.image_channels = image_channels
        self.num_downs = downs
        emb_ch = embedding_channels or 4 * model_channels
        self.embed = TimeEmbedding(embedding, model_channels, emb_ch)
        self.stem = conv2d(image_channels, model_channels, 1)
        self.blocks = nn.ModuleList()
        ch = model_channels
        for i, mult in enumerate(channel_mult):
            self.blocks.append(
                ResBlock(
                    ch,
                    model_channels * mult,
                    emb_ch,
                    resample="down" if i > 0 else None,
                    dropout=dropout,
                    activation="leaky_relu",
                    zero_init=False,
                )
            )
            ch = model_channels * mult
        self.final = conv2d(ch + 1, ch, 3)
        self.head = linear(ch, 1)
        self.num_classes = num_classes
        self.class_proj = nn.Embedding(num_classes, ch) if num_classes else None

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        return_features: bool = False,
    ):
        """x: (N, C, H, W), the level-(l-1) image; t: (N,) or a scalar; labels: (N,) or None.

        With ``return_features``, ``(logits, [each block's output])``: the features that
        UDPM's feature-matching term compares (``objectives.udpm.feature_matching``).
        """
        self._check(x, class_labels)
        emb = self.embed(batch_times(t, x.shape[0], x.device))
        h = F.leaky_relu(self.stem(x), 0.2)
        features_per_block = []
        for block in self.blocks:
            h = block(h, emb)
            features_per_block.append(h)
        h = F.leaky_relu(self.final(minibatch_std(F.leaky_relu(h, 0.2))), 0.2)
        features = h.sum(dim=(2, 3))  # sum-pooling, as DDGAN
        logits = self.head(features).squeeze(1)
        if self.class_proj is not None:
            # Projection discriminator (Miyato & Koyama, 2018).
            logits = logits + (features * self.class_proj(class_labels)).sum(dim=1)
        return (logits, features_per_block) if return_features else logits

    def _check(self, x: torch.Tensor, class_labels: torch.Tensor | None) -> None:
        multiple = 2**self.num_downs
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise UDPMError(f"expected (N, {self.image_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise UDPMError(f"input size {tuple(x.shape[2:])} is not divisible by {multiple}")
        if (class_labels is None) != (self.class_proj is None):
            raise UDPMError(
                f"this discriminator has num_classes={self.num_classes}; "
                f"class_labels {'missing' if class_labels is None else 'not expected'}"
            )
