"""Pixels ↔ model range: uint8 0..255 and float [-1, 1], the one place the mapping lives.

Every udpm model works on images in [-1, 1] with ``x = u/127.5 - 1`` for a pixel value
``u`` in 0..255: the integers 0..255 scaled linearly to [-1, 1], as in Ho et al. 2020,
Sec. 3.3. `to_uint8` is its inverse up to rounding, the quantisation a PNG file applies,
so metrics that want pixels (FID) see what a saved sample would contain.
"""

from __future__ import annotations

import torch


def from_uint8(u8: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1], same shape: ``u/127.5 - 1`` (0 -> -1, 255 -> 1).

    Exact inverse of `to_uint8` on its values: ``to_uint8(from_uint8(u)) == u``.
    """
    return u8.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 0..255, same shape: ``round((x + 1)·127.5)``.

    * rounding is to the nearest integer, halves to even (``torch.round``): 0.0 maps to
      127.5 and so to 128, and ``u ± 0.5`` lands on the even neighbour;
    * values outside [-1, 1] are clamped to 0 or 255;
    * NaN becomes 128 (it is read as 0.0), so a diverged sample still writes a file.

    uint8 input is returned unchanged; the result is on the input's device.
    """
    if x.dtype == torch.uint8:
        return x
    x = torch.nan_to_num(x.detach().to(torch.float32), nan=0.0)
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
