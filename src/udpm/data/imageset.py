"""The in-memory image set, its torch `Dataset` view, and the size check the UDPM needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from udpm.errors import UDPMError
from udpm.images import from_uint8


@dataclass(repr=False)
class ImageSet:
    """A whole data set held in memory as uint8, the form every source is loaded into.

    Attributes:
        images: uint8 tensor (N, C, H, W), C = 1 (grey) or 3 (RGB), values 0..255.
        labels: int64 tensor (N,) of class indices, or None for an unlabelled set.
        class_names: the name of each class index, or None when the source names none.
        source: where the images came from (a path or an embedded name), for messages.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise UDPMError(
                f"ImageSet images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels is not None:
            self._check_labels()

    def _check_labels(self) -> None:
        if self.labels.shape != (len(self.images),):
            raise UDPMError(
                f"mismatched labels: {self.labels.numel()} labels for {len(self.images)} images "
                f"in {self.source}"
            )
        self.labels = self.labels.long()
        if len(self.labels) and int(self.labels.min()) < 0:
            raise UDPMError(
                f"labels in {self.source} must be non-negative, found {int(self.labels.min())}"
            )
        top = int(self.labels.max()) if len(self.labels) else -1
        if self.class_names is not None and top >= len(self.class_names):
            raise UDPMError(
                f"labels in {self.source} go up to {top} but only {len(self.class_names)} "
                "classes are named"
            )

    @classmethod
    def from_numpy(
        cls,
        images: np.ndarray,
        labels=None,
        class_names: list[str] | None = None,
        source: str = "",
    ) -> ImageSet:
        """Build from uint8 images (N, H, W, C), channel-last as decoders give them."""
        images_t = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        labels_t = None if labels is None else torch.as_tensor(np.asarray(labels, np.int64))
        return cls(images_t, labels_t, class_names, source)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ImageSet({len(self)} images, {c}x{h}x{w}, {self.num_classes} classes, "
            f"source={self.source!r})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 for an unlabelled set."""
        if self.labels is None:
            return 0
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    @property
    def channels(self) -> int:
        """C: 1 for grey, 3 for RGB."""
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        """The side of the (square) images; raises UDPMError if they are not square."""
        h, w = self.images.shape[2:]
        if h != w:
            raise UDPMError(
                f"images from {self.source} are {w}x{h}, not square; "
                "load them with a resolution to resize and centre-crop them"
            )
        return h


class ImageDataset(Dataset):
    """A torch `Dataset` over an `ImageSet`, yielding ``(x, label)`` for training.

    ``x`` is float32 (C, H, W) in [-1, 1]; ``label`` is the class index, or -1 for an
    unlabelled set. With ``hflip`` each item is mirrored left-right with probability 1/2,
    drawn from torch's global RNG so that ``torch.manual_seed`` and the DataLoader's
    per-worker seeding make the flips reproducible.
    """

    def __init__(self, image_set: ImageSet, hflip: bool = True):
        self.image_set = image_set
        self.hflip = hflip  # random horizontal flips, the usual augmentation for CIFAR/FFHQ

    def __len__(self) -> int:
        return len(self.image_set)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = from_uint8(self.image_set.images[index])
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        labels = self.image_set.labels
        return x, (int(labels[index]) if labels is not None else -1)


def check_divisible(resolution: int, factor: int, levels: int) -> int:
    """Check that a UDPM with `levels` downsamplings by `factor` fits images of side `resolution`.

    Level l of the UDPM holds images of side resolution / factor^l, so the side must be a
    multiple of factor^levels. Returns the side at the coarsest level, resolution // factor^L.
    """
    step = factor**levels
    if resolution % step != 0:
        lower = resolution // step * step
        options = f"{lower} or {lower + step}" if lower else f"{step}"
        raise UDPMError(
            f"image size {resolution} is not divisible by {factor}^{levels} = {step}, which "
            f"a UDPM with {levels} levels of {factor}x downsampling needs; use {options}, "
            "or fewer levels"
        )
    return resolution // step
