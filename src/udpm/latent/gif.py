"""Interpolations as animated GIFs (Pillow)."""

from __future__ import annotations

import os

import torch
from PIL import Image

from udpm.images import to_uint8


def gif_frames(images: torch.Tensor) -> torch.Tensor:
    """Frames ``(N, C, H, W)`` in playing order, so that neighbouring frames are neighbours.

    A row ``(S, C, H, W)`` plays there and back; a grid ``(S, S, C, H, W)`` row by row in a
    zigzag (the odd rows reversed).
    """
    if images.ndim == 4:
        return torch.cat([images, images.flip(0)[1:-1]])
    return torch.cat([row if i % 2 == 0 else row.flip(0) for i, row in enumerate(images)])


def save_gif(
    frames: torch.Tensor, path: str | os.PathLike, scale: int = 1, duration_ms: int = 120
) -> None:
    """Write frames ``(N, C, H, W)`` in ``[-1, 1]`` as a looping GIF, upscaled ``scale``
    times (nearest neighbour)."""
    arrays = to_uint8(frames).cpu().permute(0, 2, 3, 1).numpy()
    gray = arrays.shape[-1] == 1
    images = [Image.fromarray(a[..., 0] if gray else a, "L" if gray else "RGB") for a in arrays]
    images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
