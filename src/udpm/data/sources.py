"""`load_source`: read an .npz, an image folder, a zip, the CIFAR tarball or an embedded set.

Folders and zips share one path: list the image files in sorted order, derive labels from
their relative paths, decode each with PIL, convert (`convert.pil_to_array`) and stack.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from udpm.data.cifar import load_cifar
from udpm.data.convert import check_channels, convert_array, pil_to_array
from udpm.data.guards import MAX_PIXELS, check_pixels, walk_files
from udpm.data.imageset import ImageSet
from udpm.errors import UDPMError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
_EMBEDDED = {"emoji32": "emoji32.npz"}  # name -> file in udpm/assets
EMBEDDED_DATASETS = list(_EMBEDDED)
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def load_source(
    source: str | os.PathLike,
    resolution: int | None = None,
    channels: int = 3,
    max_images: int | None = None,
    *,
    split: str = "train",
    max_pixels: int | None = MAX_PIXELS,
) -> ImageSet:
    """Load a SOURCE (see `udpm.data`) into memory as an `ImageSet`.

    Args:
        source: a path to an .npz, an image folder, a .zip of images or the CIFAR python
            tarball, or the name of an embedded data set (`EMBEDDED_DATASETS`). An existing
            path wins over an embedded name.
        resolution: side of the square output images. Images of another size have their
            shorter side scaled to it (antialiased bicubic) and their centre cropped. None
            keeps the native size, which all images must then share.
        channels: 3 for RGB or 1 for grey; other layouts (grey, RGBA, LA, palette) are
            converted, with transparency composited over white.
        max_images: keep only the first this many images (in the source's sorted order).
        split: "train" or "test"; which batches of the CIFAR tarball to read.
        max_pixels: refuse an image of a folder or zip with more pixels than this, before
            decoding it (None: no cap).

    Raises:
        UDPMError: a missing or unsupported source, an unreadable image, an empty source,
            mismatched labels, or images of differing sizes when `resolution` is None.
    """
    _check_options(resolution, channels, max_images)
    name = os.fspath(source)
    if not name.strip():
        raise UDPMError("empty data source: give a path or an embedded data set name")
    path = Path(name).expanduser()
    if not path.exists():
        if name in _EMBEDDED:
            return _load_embedded(name, resolution, channels, max_images)
        if os.sep not in name and "/" not in name and not path.suffix:
            raise UDPMError(
                f"unknown data set {name!r}: no such file or folder, and the embedded data "
                f"sets are: {', '.join(EMBEDDED_DATASETS)}"
            )
        raise UDPMError(f"no such file or folder: {name}")
    if path.is_dir():
        return _load_folder(path, resolution, channels, max_images, max_pixels)
    lower = path.name.lower()
    if lower.endswith(".npz"):
        return _load_npz(path, resolution, channels, max_images, name)
    if lower.endswith(".zip"):
        return _load_zip(path, resolution, channels, max_images, max_pixels)
    if lower.endswith(_TAR_SUFFIXES):
        return load_cifar(path, resolution, channels, max_images, split=split)
    raise UDPMError(
        f"unsupported data source {name}: expected an .npz, an image folder, a .zip of images, "
        f"the CIFAR python tarball (.tar.gz) or an embedded data set "
        f"({', '.join(EMBEDDED_DATASETS)})"
    )


def _check_options(resolution: int | None, channels: int, max_images: int | None) -> None:
    for label, value in (("resolution", resolution), ("max_images", max_images)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise UDPMError(f"{label} must be a positive integer, got {value!r}")
    check_channels(channels)


def _load_embedded(name: str, resolution, channels, max_images) -> ImageSet:
    # Read through importlib.resources so that it works from wheels and zipped installs.
    asset = resources.files("udpm") / "assets" / _EMBEDDED[name]
    with resources.as_file(asset) as path:
        return _load_npz(path, resolution, channels, max_images, name)


# --- .npz ---------------------------------------------------------------------------------


def _load_npz(path: Path, resolution, channels, max_images, where: str) -> ImageSet:
    if not zipfile.is_zipfile(path):
        raise UDPMError(f"cannot read {where}: not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UDPMError(f"cannot read {where}: {_reason(e)}") from e
    images = _npz_images(arrays, where)
    labels, class_names = _npz_labels(arrays, len(images), where)
    if max_images is not None:
        images = images[:max_images]
        labels = None if labels is None else labels[:max_images]
    images = convert_array(images, resolution, channels)
    return ImageSet.from_numpy(images, labels, class_names, where)


def _npz_images(arrays: dict[str, np.ndarray], where: str) -> np.ndarray:
    if "images" not in arrays:
        found = ", ".join(arrays) or "nothing"
        raise UDPMError(f"{where} has no 'images' array (it holds: {found})")
    images = arrays["images"]
    if images.dtype != np.uint8:
        raise UDPMError(f"images in {where} must be uint8, got {images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 2, 3, 4)):
        raise UDPMError(
            f"images in {where} must be NxHxW or NxHxWxC with C in 1..4, got shape {images.shape}"
        )
    if len(images) == 0:
        raise UDPMError(f"no images found in {where}")
    return images


def _npz_labels(arrays: dict[str, np.ndarray], n: int, where: str):
    """(labels int64 (N,) or None, class names or None), checked against the N images."""
    if "labels" not in arrays:
        return None, None
    labels = arrays["labels"]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UDPMError(
            f"labels in {where} must be a 1-D integer array, got {labels.dtype} of shape "
            f"{labels.shape}"
        )
    if len(labels) != n:
        raise UDPMError(f"mismatched labels: {len(labels)} labels for {n} images in {where}")
    class_names = None
    if "classes" in arrays:
        classes = arrays["classes"].ravel()
        class_names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    return labels.astype(np.int64), class_names


# --- folders and zips ---------------------------------------------------------------------


def _is_image_name(relpath: str) -> bool:
    """An image file, skipping hidden files and folders and macOS '__MACOSX' zip debris."""
    parts = relpath.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return parts[-1].lower().endswith(IMAGE_EXTENSIONS)


def _load_folder(root: Path, resolution, channels, max_images, max_pixels) -> ImageSet:
    names = sorted(n for n in walk_files(root) if _is_image_name(n))
    meta = root / "dataset.json"
    meta_bytes = meta.read_bytes() if meta.is_file() else None
    return _load_files(
        names,
        lambda n: open(root / n, "rb"),
        meta_bytes,
        str(root),
        resolution,
        channels,
        max_images,
        max_pixels,
    )


def _load_zip(path: Path, resolution, channels, max_images, max_pixels) -> ImageSet:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UDPMError(f"cannot read {path}: not a zip archive ({_reason(e)})") from e
    with archive:
        members = archive.namelist()
        names = sorted(n for n in members if not n.endswith("/") and _is_image_name(n))
        meta_bytes = archive.read("dataset.json") if "dataset.json" in members else None
        return _load_files(
            names,
            lambda n: io.BytesIO(archive.read(n)),
            meta_bytes,
            str(path),
            resolution,
            channels,
            max_images,
            max_pixels,
        )


def _load_files(
    names: list[str],
    open_file: Callable[[str], IO[bytes]],
    meta_bytes: bytes | None,
    where: str,
    resolution,
    channels,
    max_images,
    max_pixels,
) -> ImageSet:
    """Decode `names` (sorted paths relative to the folder or zip root) into an ImageSet."""
    if not names:
        raise UDPMError(f"no images found in {where} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    if meta_bytes is not None:
        labels, class_names = _labels_from_json(meta_bytes, names, where), None
    else:
        labels, class_names = _labels_from_folders(names, where)
    if max_images is not None:
        names = names[:max_images]
        labels = None if labels is None else labels[:max_images]
    images = _decode_all(names, open_file, where, resolution, channels, max_pixels)
    return ImageSet.from_numpy(images, labels, class_names, where)


def _labels_from_folders(names: list[str], where: str):
    """Label by top-level subfolder when >= 2 hold images; look through lone wrapper folders.

    A zip of ``afhq/`` holds ``afhq/cat/...``, ``afhq/dog/...``: the single wrapper ``afhq``
    is skipped, so zipping a folder does not change its labels.
    """
    rel = names
    while all("/" in n for n in rel) and len({n.split("/", 1)[0] for n in rel}) == 1:
        rel = [n.split("/", 1)[1] for n in rel]
    classes = sorted({n.split("/", 1)[0] for n in rel if "/" in n})
    if len(classes) < 2:
        return None, None
    loose = [n for n, r in zip(names, rel) if "/" not in r]
    if loose:
        raise UDPMError(
            f"{where} mixes class folders ({', '.join(classes[:3])}, ...) with {len(loose)} "
            f"images outside them (e.g. {loose[0]!r}); move those into a class folder"
        )
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[r.split("/", 1)[0]] for r in rel], np.int64), classes


def _labels_from_json(meta_bytes: bytes, names: list[str], where: str) -> np.ndarray | None:
    """Labels from a StyleGAN/EDM ``dataset.json``: {"labels": [[name, int], ...] or null}."""
    try:
        entries = json.loads(meta_bytes).get("labels")
        table = None if entries is None else {str(k): int(v) for k, v in entries}
    except (ValueError, TypeError, AttributeError) as e:
        raise UDPMError(
            f'cannot read dataset.json in {where}: expected {{"labels": [[file, int], ...]}} '
            f"({_reason(e)})"
        ) from e
    if table is None:
        return None
    missing = [n for n in names if n not in table]
    if missing:
        raise UDPMError(
            f"dataset.json in {where} gives no label for {missing[0]!r} "
            f"({len(missing)} images without one)"
        )
    return np.array([table[n] for n in names], np.int64)


def _decode_all(names, open_file, where: str, resolution, channels, max_pixels) -> np.ndarray:
    arrays = []
    for name in names:
        image = _open_image(open_file, name, where, max_pixels)
        arrays.append(pil_to_array(image, resolution, channels))
        if arrays[-1].shape != arrays[0].shape:
            (h0, w0), (h, w) = arrays[0].shape[:2], arrays[-1].shape[:2]
            raise UDPMError(
                f"images in {where} differ in size: {names[0]!r} is {w0}x{h0} but {name!r} is "
                f"{w}x{h}; give a resolution to resize and centre-crop them"
            )
    return np.stack(arrays)


def _open_image(open_file: Callable[[str], IO[bytes]], name: str, where: str, max_pixels):
    try:
        with open_file(name) as f:
            image = Image.open(f)
            check_pixels(image, name, where, max_pixels)
            image.load()  # decode now, while the file is open, so corrupt data fails here
        return image
    except UDPMError:
        raise
    except Exception as e:  # decoders raise many types: OSError, SyntaxError, zlib.error...
        raise UDPMError(f"cannot read image {name!r} in {where}: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    """A one-line description of an exception, for messages."""
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
