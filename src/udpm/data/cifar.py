"""Read the CIFAR-10 (or CIFAR-100) python tarball in place, without extracting it.

Its batches are Python pickles, and unpickling can run arbitrary code. `_SafeUnpickler`
therefore resolves only the few globals that rebuild numpy arrays (and the latin-1
``_codecs.encode`` that protocol-2 pickles use for bytes); anything else, such as
``os.system``, is refused before it can be called.
"""

from __future__ import annotations

import importlib
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from udpm.data.convert import convert_array
from udpm.data.imageset import ImageSet
from udpm.errors import UDPMError

# (module, name) pairs a CIFAR batch may reference. Pickles written by numpy 1.x name
# numpy.core, those by numpy 2.x numpy._core; both map to the module that exists here.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
}

# Member names (without the folder) of the training and test batches, and of the metadata.
_SPLITS = {"train": ("data_batch_", "train"), "test": ("test_batch", "test")}
_META = ("batches.meta", "meta")


def _latin1_encode(text: str, encoding: str) -> bytes:
    """The only use of ``_codecs.encode`` in a data pickle: protocol 2's spelling of bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _SafeUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        key = (module.replace("numpy._core.", "numpy.core."), name)
        if key not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}'")
        if key[0] == "numpy":
            return getattr(np, name)
        # Prefer numpy._core (numpy >= 2), where numpy.core is a deprecated alias.
        submodule = key[0].rsplit(".", 1)[1]
        try:
            return getattr(importlib.import_module(f"numpy._core.{submodule}"), name)
        except (ImportError, AttributeError):
            return getattr(importlib.import_module(f"numpy.core.{submodule}"), name)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _unpickle(archive: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> dict:
    try:
        with archive.extractfile(member) as f:
            # encoding="bytes": the batches were pickled by Python 2, with byte-string keys.
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # pickle raises many types on corrupt data
        raise UDPMError(f"cannot read {member.name} in {where}: {_one_line(e)}") from e
    if not isinstance(batch, dict):
        raise UDPMError(f"{member.name} in {where} is not a CIFAR python batch (not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _batch_arrays(batch: dict, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,)) from one batch dict."""
    data = batch.get("data")
    labels = batch.get("labels", batch.get("fine_labels"))  # CIFAR-10, CIFAR-100
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3 * 32 * 32)
        or labels is None
    ):
        raise UDPMError(f"{name} in {where} is not a CIFAR python batch")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(data),):
        raise UDPMError(
            f"mismatched labels: {labels.size} labels for {len(data)} images in {name} of {where}"
        )
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _class_names(archive: tarfile.TarFile, members: list[tarfile.TarInfo], where: str):
    meta = [m for m in members if Path(m.name).name in _META]
    if not meta:
        return None
    info = _unpickle(archive, meta[0], where)
    names = info.get("label_names", info.get("fine_label_names"))
    return None if names is None else [n.decode() if isinstance(n, bytes) else n for n in names]


def load_cifar(
    path: Path,
    resolution: int | None = None,
    channels: int = 3,
    max_images: int | None = None,
    *,
    split: str = "train",
) -> ImageSet:
    """Load the CIFAR python tarball `path`: its training batches, or its test batch."""
    if split not in _SPLITS:
        raise UDPMError(f"split must be 'train' or 'test', got {split!r}")
    where = str(path)
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise UDPMError(f"cannot read {where}: not a tar archive ({_one_line(e)})") from e
    with archive:
        try:
            members = [m for m in archive.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise UDPMError(f"cannot read {where}: corrupt archive ({_one_line(e)})") from e
        prefix, exact = _SPLITS[split]
        names = {m: Path(m.name).name for m in members}
        batches = [m for m in members if names[m].startswith(prefix) or names[m] == exact]
        batches.sort(key=lambda m: m.name)
        if not batches:
            raise UDPMError(
                f"no images found in {where}: it holds no CIFAR python batches "
                f"({prefix}*); only the CIFAR python tarball is read among tar archives"
            )
        images, labels = [], []
        for member in batches:
            x, y = _batch_arrays(_unpickle(archive, member, where), member.name, where)
            images.append(x)
            labels.append(y)
            if max_images is not None and sum(map(len, images)) >= max_images:
                break
        class_names = _class_names(archive, members, where)
    images = np.concatenate(images)[:max_images]
    labels = np.concatenate(labels)[:max_images]
    return ImageSet.from_numpy(
        convert_array(images, resolution, channels), labels, class_names, where
    )
