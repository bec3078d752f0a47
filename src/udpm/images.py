"""Images as tensors: uint8 ``0..255`` and the ``[-1, 1]`` floats every network sees.

``from_uint8(k) = k/127.5 - 1`` and ``to_uint8(x) = round((x + 1)·127.5)`` clamped to
``0..255``, so ``to_uint8(from_uint8(k)) == k`` for every byte; values outside [-1, 1] clip.
"""

from __future__ import annotations

import torch


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (any shape) to float32 in ``[-1, 1]``."""
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Floats in ``[-1, 1]`` (clipped) to uint8, rounding to the nearest level."""
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
