"""Training data: load a SOURCE into an `ImageSet`, serve it as a torch `ImageDataset`, write PNGs.

A SOURCE is one of

* a path to an ``.npz`` holding ``images`` (uint8, N×H×W or N×H×W×C), optional ``labels``
  (integers, length N) and optional ``classes`` (label names);
* an image folder, read recursively (png, jpg, jpeg, bmp, webp, gif);
* a ``.zip`` of images, read in place without extracting;
* the CIFAR-10 (or CIFAR-100) python tarball, e.g. ``cifar-10-python.tar.gz``;
* the name of a data set that ships with the package (`EMBEDDED_DATASETS`, e.g. ``"emoji32"``).

Folders and zips are labelled by their top-level subfolders when at least two of them hold
images (``afhq/cat``, ``afhq/dog``, ...), and are unlabelled otherwise. A ``dataset.json`` at
the top (the StyleGAN/EDM dataset-zip format, ``{"labels": [[name, int], ...] | null}``)
overrides that rule, so EDM's FFHQ-64 zip, whose images sit in folders ``00000``, ``01000``,
..., loads unlabelled.

Every bad input raises `udpm.errors.UDPMError` with a one-line message naming the problem.
"""

from udpm.data.imageset import ImageDataset, ImageSet, check_divisible
from udpm.data.save import save_image_grid, save_images
from udpm.data.sources import EMBEDDED_DATASETS, IMAGE_EXTENSIONS, load_source
from udpm.images import to_uint8  # re-exported: udpm.data.to_uint8 is public

__all__ = [
    "EMBEDDED_DATASETS",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageSet",
    "check_divisible",
    "load_source",
    "save_image_grid",
    "save_images",
    "to_uint8",
]
