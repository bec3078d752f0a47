"""What a SOURCE holds, read from headers before anything is decoded: sizes, colours, classes.

Training starts from this so that the settings follow the data (`udpm.config.fit`): 28-px
grey digits train as 28→32-px grey, not as 32-px RGB. It also names what loading will do
without asking: files that are not images are skipped, transparent images are composited
over white, colour images are made grey (or grey ones RGB), and images of other sizes are
resized and centre-cropped. Folders and zips are read with PIL's lazy ``Image.open``,
which parses the header only.
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from udpm.data.guards import walk_files
from udpm.errors import UDPMError

_NPZ_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels of an .npz -> the PIL mode
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass
class Survey:
    """The headers of every image of a SOURCE.

    Attributes:
        source: the SOURCE as given.
        sizes: (width, height) -> number of images.
        modes: PIL mode (``L``, ``RGB``, ``RGBA``, ``P``, ...) -> number of images.
        formats: file format (``PNG``, ``JPEG``, or ``array`` for .npz) -> number of images.
        class_names: the class of each label (sub-folders, dataset.json or the .npz), or [].
        skipped: files that are not images and were left out (README.txt, say).
    """

    source: str
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(self.sizes.values())

    @property
    def grey(self) -> bool:
        """Every image is grey (so training in grey loses nothing)."""
        return all(mode in _GREY_MODES for mode in self.modes)

    @property
    def colour(self) -> int:
        """How many images are stored in colour (RGB, RGBA, palette, CMYK, ...)."""
        return sum(c for mode, c in self.modes.items() if mode not in _GREY_MODES)

    @property
    def side(self) -> int:
        """The most common shorter side: the native resolution."""
        (w, h), _ = self.sizes.most_common(1)[0]
        return min(w, h)

    def describe(self) -> str:
        """``500 images, 28x28 grey, 10 classes``."""
        sizes = ", ".join(f"{w}x{h}" for (w, h), _ in self.sizes.most_common(3))
        more = f" and {len(self.sizes) - 3} more sizes" if len(self.sizes) > 3 else ""
        classes = f", {len(self.class_names)} classes" if self.class_names else ", no classes"
        return f"{self.n} images, {sizes}{more} {'grey' if self.grey else 'colour'}{classes}"

    def conversions(self, resolution: int, channels: int) -> list[str]:
        """One line per thing loading at ``resolution`` and ``channels`` does to the images."""
        lines = []
        if self.skipped:
            names = ", ".join(self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else "")
            lines.append(f"skipped {len(self.skipped)} file(s) that are not images: {names}")
        alpha = sum(c for m, c in self.modes.items() if m in ("RGBA", "LA", "La", "PA", "RGBa"))
        if alpha:
            lines.append(f"{alpha} image(s) with transparency composited over white")
        if channels == 1 and self.colour:
            lines.append(f"{self.colour} colour image(s) converted to grey")
        if channels == 3 and self.colour < self.n:
            lines.append(f"{self.n - self.colour} grey image(s) repeated to RGB")
        off = sum(c for (w, h), c in self.sizes.items() if (w, h) != (resolution, resolution))
        if off:
            lines.append(
                f"{off} image(s) not {resolution}x{resolution} resized (shorter side, bicubic) "
                "and centre-cropped"
            )
        lossy = sum(c for f, c in self.formats.items() if f == "JPEG")
        if lossy and len(self.formats) > 1:
            lines.append(f"{lossy} JPEG image(s) among {', '.join(sorted(self.formats))} files")
        return lines


def survey(source: str | os.PathLike) -> Survey:
    """Read the headers of SOURCE (see `udpm.data`); decodes nothing but .npz arrays."""
    from udpm.data.sources import _EMBEDDED, _TAR_SUFFIXES

    name = os.fspath(source)
    path = Path(name).expanduser()
    if not path.exists() and name in _EMBEDDED:
        with resources.as_file(resources.files("udpm") / "assets" / _EMBEDDED[name]) as p:
            return _survey_npz(p, name)
    if path.is_dir():
        return _survey_files(name, walk_files(path), lambda n: open(path / n, "rb"))
    lower = path.name.lower()
    if lower.endswith(".zip") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            return _survey_files(name, names, archive.open)
    if lower.endswith(".npz") and zipfile.is_zipfile(path):
        return _survey_npz(path, name)
    if lower.endswith(_TAR_SUFFIXES):
        from udpm.data import load_source

        return _survey_set(load_source(name), name)
    from udpm.data import load_source

    load_source(name)  # not a source we can survey: let the loader name the problem
    raise UDPMError(f"cannot survey {name}")


def _survey_files(source: str, names: list[str], open_file) -> Survey:
    from udpm.data.sources import _is_image_name, _labels_from_folders

    images = sorted(n for n in names if _is_image_name(n))
    result = Survey(source)
    hidden = ("dataset.json", "__MACOSX")
    result.skipped = sorted(
        n
        for n in names
        if not _is_image_name(n)
        and n not in hidden
        and not any(part.startswith(".") or part in hidden for part in n.split("/"))
    )
    for image_name in images:
        try:
            with open_file(image_name) as f, Image.open(f) as image:
                mode = "RGBA" if "transparency" in image.info else image.mode
                result.sizes[image.size] += 1
                result.modes[mode] += 1
                result.formats[image.format or "?"] += 1
        except Exception as exc:  # the loader names it precisely; the survey only counts
            raise UDPMError(f"cannot read image {image_name!r} in {source}: {exc}") from exc
    if not images:
        raise UDPMError(f"no images found in {source}")
    _, classes = _labels_from_folders(images, source)
    result.class_names = list(classes or [])
    return result


def _survey_npz(path: Path, source: str) -> Survey:
    with np.load(path, allow_pickle=False) as npz:
        if "images" not in npz.files:
            raise UDPMError(f"{source} has no 'images' array")
        shape = npz["images"].shape
        labels = npz["labels"] if "labels" in npz.files else None
        classes = [str(c) for c in npz["classes"].ravel()] if "classes" in npz.files else None
    channels = 1 if len(shape) == 3 else shape[-1]
    result = Survey(source, Counter({(shape[2], shape[1]): shape[0]}))
    result.modes[_NPZ_MODES.get(channels, "?")] = shape[0]
    result.formats["array"] = shape[0]
    if labels is not None:
        result.class_names = classes or [str(c) for c in range(int(labels.max()) + 1)]
    return result


def _survey_set(data, source: str) -> Survey:
    n, c, h, w = data.images.shape
    result = Survey(source, Counter({(w, h): n}), Counter({"L" if c == 1 else "RGB": n}))
    result.formats["array"] = n
    if data.num_classes:
        result.class_names = list(data.class_names or range(data.num_classes))
    return result
