"""Guards for image folders: walk symlinks without loops, refuse images too large to decode.

``os.walk(followlinks=True)`` enters a symlink to an ancestor again and again, so a loop
multiplies a data set until paths grow too long. :func:`walk_files` visits each real
folder once, keyed by ``(device, inode)``. :func:`check_pixels` reads only the header PIL
has parsed, so a huge image is refused before its pixels are decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from udpm.errors import UDPMError

# 8192 x 8192: far above any training image, far below what exhausts memory (PIL itself
# only warns below 2 x 89 megapixels).
MAX_PIXELS = 8192 * 8192


def walk_files(root: Path) -> list[str]:
    """Relative paths (with ``/``) of the files under ``root``; hidden folders skipped."""
    names, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a symlink
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root).as_posix()
        names += [f if rel == "." else f"{rel}/{f}" for f in filenames]
    return names


def check_pixels(image: Image.Image, name: str, where: str, max_pixels: int | None) -> None:
    """Raise if ``image`` (opened, not yet decoded) has more than ``max_pixels`` pixels."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise UDPMError(
            f"image {name!r} in {where} is {width}x{height} = {width * height / 1e6:.1f} "
            f"megapixels, above the cap of {max_pixels / 1e6:.1f}; shrink it or raise max_pixels"
        )
