"""Bring decoded images to one channel layout and one size: the shared tail of every loader.

Transparent images are composited over white *before* resizing, so that the colour hidden
under fully transparent pixels (often black) cannot bleed into the edges when resampling.
Resizing scales the shorter side to the target with PIL's antialiased bicubic filter, then
crops the centre square.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from udpm.errors import UDPMError

_MODE = {1: "L", 3: "RGB"}


def check_channels(channels: int) -> str:
    """The PIL mode for `channels` (1 -> "L", 3 -> "RGB"); anything else is a UDPMError."""
    if channels not in _MODE:
        raise UDPMError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    return _MODE[channels]


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image (grey, RGB, RGBA, LA, P, 16-bit, CMYK...) to L or RGB."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # PIL clips 16-bit grey to 0..255 instead of rescaling it; rescale ourselves.
        scale = 1.0 if img.mode == "F" else 1.0 / 257.0
        grey = np.clip(np.asarray(img, dtype=np.float64) * scale, 0, 255)
        img = Image.fromarray(np.round(grey).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert(check_channels(channels))


def resize_crop(img: Image.Image, resolution: int) -> Image.Image:
    """Scale the shorter side to `resolution` (antialiased bicubic), then centre-crop a square."""
    w, h = img.size
    if (w, h) == (resolution, resolution):
        return img
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def pil_to_array(img: Image.Image, resolution: int | None, channels: int) -> np.ndarray:
    """One decoded image -> uint8 (H, W, C) with the requested channels and size."""
    img = to_mode(img, channels)
    if resolution is not None:
        img = resize_crop(img, resolution)
    return np.asarray(img, dtype=np.uint8).reshape(img.size[1], img.size[0], channels)


def _composite_over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """colour·a + white·(1 − a) in integers, rounded; colour (..., C), alpha (..., 1)."""
    colour, alpha = colour.astype(np.int32), alpha.astype(np.int32)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma with PIL's fixed-point rounding, so arrays and files agree."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def convert_array(images: np.ndarray, resolution: int | None, channels: int) -> np.ndarray:
    """A uint8 batch (N, H, W) or (N, H, W, C), C in 1..4 -> uint8 (N, H', W', channels).

    C = 2 and C = 4 are read as grey+alpha and RGBA and composited over white. N must be >= 1.
    """
    check_channels(channels)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] in (2, 4):
        images = _composite_over_white(images[..., :-1], images[..., -1:])
    if images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 3 and channels == 1:
        images = _rgb_to_grey(images)
    if resolution is not None and images.shape[1:3] != (resolution, resolution):
        mode = _MODE[channels]
        resized = [
            pil_to_array(
                Image.fromarray(im.squeeze(-1) if channels == 1 else im, mode), resolution, channels
            )
            for im in images
        ]
        images = np.stack(resized)
    return np.ascontiguousarray(images)
