"""`compute_metrics`: samples and real images in, a dictionary of quality numbers out.

Images stream through the feature network once, in batches; the real side is looked up in
(or added to) the reference cache when it has a key; then FD, KID and precision/recall are
computed on the features (`udpm.eval.metrics`) and, if asked for and installed, standard
Inception FID (`udpm.eval.inception`) on the same batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

import udpm
from udpm.errors import UDPMError
from udpm.eval import metrics as M
from udpm.eval import reference
from udpm.eval.features import feature_network_hash, load_feature_network
from udpm.images import from_uint8

ALL_METRICS = ("fd", "kid", "pr", "fid")
Images = torch.Tensor | Iterable


def iter_batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of float images in [-1, 1] from a tensor (N, C, H, W) or an iterable of batches.

    Iterable items may be tensors or ``(images, labels, ...)`` tuples (a DataLoader's).
    uint8 batches are mapped from [0, 255] to [-1, 1].
    """
    chunks = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    for chunk in chunks:
        x = chunk[0] if isinstance(chunk, (tuple, list)) else chunk
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise UDPMError(f"expected image batches (N, C, H, W), got {_describe(x)}")
        if x.dtype == torch.uint8:
            x = from_uint8(x)
        elif float(x.abs().max()) > 2:
            raise UDPMError(
                f"images must lie in [-1, 1], found values up to {float(x.abs().max()):.3g}"
            )
        yield x.clamp(-1, 1)


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _count(images: Images, batch_size: int) -> int | None:
    if isinstance(images, torch.Tensor):
        return -(-len(images) // batch_size)
    return len(images) if hasattr(images, "__len__") else None


class FeatureSink:
    """Collects a feature network's outputs for the real and the fake images."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.device = next(iter(net.parameters()), torch.empty(0)).device
        self.network_id = feature_network_hash(net)
        self.resize_mode = getattr(net, "resize_mode", "none")
        self.features = {True: [], False: []}

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        self.features[real].append(self.net(images.to(self.device)).float())

    def real_state(self) -> dict[str, torch.Tensor]:
        return {"features": self.get(real=True)}

    def load_real_state(self, state: dict[str, torch.Tensor]) -> None:
        self.features[True] = [state["features"].to(self.device)]

    def get(self, real: bool) -> torch.Tensor:
        return torch.cat(self.features[real]) if self.features[real] else torch.empty(0, 0)


def extract_features(
    images: Images, net: nn.Module, batch_size: int = 256, progress: bool = False
) -> torch.Tensor:
    """Features (N, D) of images in [-1, 1] (a tensor or an iterable of batches)."""
    sink = FeatureSink(net.eval())
    for x in tqdm(
        iter_batches(images, batch_size),
        total=_count(images, batch_size),
        desc="features",
        disable=not progress,
    ):
        sink.update(x, real=False)
    return sink.get(real=False)


def _stream(images: Images, sinks: dict, real: bool, batch_size: int, progress: bool) -> None:
    desc = "real images" if real else "generated images"
    total = _count(images, batch_size)
    for x in tqdm(iter_batches(images, batch_size), total=total, desc=desc, disable=not progress):
        for sink in sinks.values():
            sink.update(x, real=real)


def _real_side(real_images, sinks, reference_key, cache_dir, batch_size, progress) -> None:
    """Load each sink's real statistics from the cache, computing (and storing) the missing."""
    if isinstance(real_images, (str, os.PathLike)) and reference_key is None:
        reference_key = reference.dataset_identity(real_images)
    paths, missing = {}, {}
    for name, sink in sinks.items():
        if reference_key is not None:
            paths[name] = reference.reference_path(
                reference_key, sink.network_id, sink.resize_mode, cache_dir
            )
            state = reference.load_reference(paths[name])
            if state is not None:
                sink.load_real_state(state)
                continue
        missing[name] = sink
    if not missing:
        return
    if real_images is None:
        raise UDPMError(f"no real images given and no cached reference for {reference_key!r}")
    if isinstance(real_images, (str, os.PathLike)):
        from udpm.data import load_source

        real_images = load_source(real_images).images
    _stream(real_images, missing, True, batch_size, progress)
    for name, sink in missing.items():
        if name in paths:
            meta = {
                "dataset": reference_key,
                "network": sink.network_id,
                "resize_mode": sink.resize_mode,
                "udpm_version": udpm.__version__,
            }
            reference.save_reference(paths[name], sink.real_state(), meta)


def compute_metrics(
    fake_images: Images,
    real_images: Images | str | os.PathLike | None,
    metrics: Iterable[str] = ("fd", "kid", "pr"),
    feature_net: str | os.PathLike | nn.Module = "emoji32",
    batch_size: int = 256,
    reference_key: str | None = None,
    progress: bool = True,
    *,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    fid_antialias: bool = False,
) -> dict:
    """Quality and diversity of generated images against real ones.

    Args:
        fake_images: generated images, floats in [-1, 1], (N, C, H, W), or an iterable of
            such batches (consumed once, so a generator that samples on the fly works).
        real_images: the same kinds, or a SOURCE (path or embedded name, loaded with
            `udpm.data.load_source`), or None when ``reference_key`` is already cached.
        metrics: any of "fd" (Fréchet distance in the feature network's space), "kid"
            (kernel distance, mean and std over subsets), "pr" (precision and recall,
            k-NN manifolds) and "fid" (standard Inception-v3 FID; needs ``udpm[fid]``).
        feature_net: a shipped feature network name, a weights path, or a module that maps
            [-1, 1] images to (N, D) features.
        batch_size: images per forward pass when the inputs are tensors.
        reference_key: cache the real side under this name (`udpm.eval.reference`);
            None caches only when ``real_images`` is a SOURCE, keyed by its content hash.
        progress: show tqdm progress bars.
        k: neighbourhood size for precision/recall.
        kid_subsets, kid_subset_size: KID's subsets; the size defaults to min(1000, n).
        seed: seeds KID's subset draws.
        cache_dir: reference cache directory (default `reference.default_cache_dir()`).
        inception_weights: Inception-v3 weights file for "fid" (else torch's hub cache).
        fid_antialias: resize for "fid": False = TF1 bilinear (as published FIDs), True =
            torchmetrics' antialiased bilinear. Recorded in the result as "fid_resize".

    Returns:
        A dict with the requested numbers ("fd", "kid_mean", "kid_std", "precision",
        "recall", "fid", "fid_resize") and "n_fake", "n_real", "feature_net",
        "feature_net_hash", "resize_mode".
    """
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise UDPMError(f"unknown metric {unknown[0]!r}; choose from {', '.join(ALL_METRICS)}")
    net = feature_net if isinstance(feature_net, nn.Module) else load_feature_network(feature_net)
    sinks = {"features": FeatureSink(net.eval())}
    if "fid" in metrics:
        from udpm.eval.inception import InceptionFID

        sinks["fid"] = InceptionFID(inception_weights, fid_antialias, sinks["features"].device)
    _real_side(real_images, sinks, reference_key, cache_dir, batch_size, progress)
    _stream(fake_images, sinks, False, batch_size, progress)
    real, fake = sinks["features"].get(real=True), sinks["features"].get(real=False)
    result = {
        "n_fake": len(fake),
        "n_real": len(real),
        "feature_net": getattr(net, "name", type(net).__name__),
        "feature_net_hash": sinks["features"].network_id,
        "resize_mode": sinks["features"].resize_mode,
    }
    if "fd" in metrics:
        result["fd"] = M.frechet_distance(real, fake)
    if "kid" in metrics:
        mean, std = M.kernel_inception_distance(real, fake, kid_subset_size, kid_subsets, seed)
        result.update(kid_mean=mean, kid_std=std)
    if "pr" in metrics:
        result["precision"], result["recall"] = M.precision_recall(real, fake, k)
    if "fid" in metrics:
        result.update(fid=sinks["fid"].compute(), fid_resize=sinks["fid"].resize_mode)
    return result
