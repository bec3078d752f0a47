"""Write images in [-1, 1] as PNG files with Pillow (torchvision is deliberately not used)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from udpm.errors import UDPMError
from udpm.images import to_uint8


def _to_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) or (C, H, W), C in {1, 3} -> uint8 numpy (N, H, W, C) on the CPU."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UDPMError(
            f"images must be (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}"
        )
    return to_uint8(images).cpu().permute(0, 2, 3, 1).numpy()


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0], "L") if image.shape[-1] == 1 else Image.fromarray(image)


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: int = 0,
) -> Path:
    """Tile images (N, C, H, W) in [-1, 1] into one PNG and write it to `path`.

    Args:
        nrow: images per row; None makes the grid about square (ceil(sqrt(N))).
        padding: pixels of `pad_value` between the images and around the border, so a grid of
            r rows and c columns is (r·(H + padding) + padding) × (c·(W + padding) + padding).
        pad_value: grey level 0..255 of the padding.

    Returns the path written. Missing parent folders are created.
    """
    tiles = _to_hwc(images)
    n, h, w, c = tiles.shape
    ncol = min(n, nrow or math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncol)
    step_h, step_w = h + padding, w + padding
    grid = np.full((nrows * step_h + padding, ncol * step_w + padding, c), pad_value, np.uint8)
    for i, tile in enumerate(tiles):
        top, left = padding + (i // ncol) * step_h, padding + (i % ncol) * step_w
        grid[top : top + h, left : left + w] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _pil(grid).save(path, format="PNG")
    return path


def save_images(
    images: torch.Tensor,
    directory: str | os.PathLike,
    prefix: str = "",
    start: int = 0,
) -> list[Path]:
    """Write each image (N, C, H, W) in [-1, 1] as ``directory/{prefix}{index:06d}.png``.

    Indices run from `start`, so successive batches can share one folder. The folder is
    created if needed. Returns the paths written, in order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(_to_hwc(images)):
        path = directory / f"{prefix}{start + i:06d}.png"
        _pil(image).save(path, format="PNG")
        paths.append(path)
    return paths
