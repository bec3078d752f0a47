"""The evaluation protocol of ``udpm eval``: which images are measured against which, and how.

Generated images are image ``i`` of seed ``seed + i`` for ``i < n`` (so a result names its
seeds and can be reproduced), or PNGs read from a folder; the reference is every image of a
SOURCE. Both are mapped to [-1, 1] and measured by `udpm.eval.compute.compute_metrics` in
the feature network's space; the result is that dictionary plus the protocol, exactly the
JSON that ``udpm eval --json`` writes::

    from udpm.eval.protocol import evaluate
    evaluate(udpm.load(), "emoji32", n=2000, metrics=("fd", "pr"))
    # {'fd': ..., 'precision': ..., 'recall': ..., 'seeds': [0, 1999], 'reference': 'emoji32', ...}

Under ``torchrun`` the command calls the steps itself: `generate` inside the process group
(seeds sharded over the ranks), then `measure` on rank 0 only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from udpm.errors import UDPMError
from udpm.images import from_uint8

DEFAULT_METRICS = ("fd", "kid", "pr")


NO_ACCEL = {"compile": False, "channels_last": False, "precision": "fp32"}


def generate(
    pipe,
    n: int,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    **sampler_kwargs,
) -> tuple[torch.Tensor, dict]:
    """Sample ``n`` images of seeds ``seed .. seed + n - 1``; ``(images, protocol)``.

    Args:
        pipe: a loaded model (`udpm.load`).
        n: number of images, at least 2 (FD needs a covariance).
        sampler_kwargs: ``sampler``, ``steps``, ``eta`` for the diffusion baselines.

    ``images`` is (n, C, H, W) in [-1, 1], in seed order; ``protocol`` records the
    checkpoint, method, step, seeds, sampler options and the sampling wall time. Under a
    ``torch.distributed`` group the seeds are sharded and every rank gets all images.
    """
    from udpm.samplers.dispatch import sample_sharded

    if n < 2:
        raise UDPMError(f"n must be at least 2 (FD needs a covariance), got {n}")
    t0 = time.perf_counter()
    images = sample_sharded(
        pipe, n, seed=seed, batch_size=batch_size, progress=progress, **sampler_kwargs
    )
    protocol = {
        "checkpoint": pipe.meta.get("path"),
        "method": pipe.config.method,
        "step": pipe.meta.get("step"),
        "seeds": [seed, seed + n - 1],
        "sampler": pipe.sampler_options(**sampler_kwargs),  # every option, clip_x0 included
        "accel": pipe.meta.get("accel", NO_ACCEL),
        "sampling_seconds": round(time.perf_counter() - t0, 2),
    }
    return images, protocol


def read_samples(folder: str | os.PathLike, resolution: int | None = None):
    """Generated images saved as files (any SOURCE, usually a PNG folder); ``(images, protocol)``.

    Images are resized to ``resolution`` if given (the reference's), and mapped to [-1, 1].
    """
    from udpm.data import load_source

    data = load_source(str(folder), resolution=resolution)
    return from_uint8(data.images), {"samples": str(folder)}


def reference_images(
    source: str, image_shape: tuple[int, int, int] | None = None
) -> tuple[torch.Tensor, int | None]:
    """Every image of the reference SOURCE in [-1, 1], and its resolution.

    With ``image_shape`` (a model's (C, H, W)) the images are loaded as training loaded
    them: converted to C channels, shorter side resized to H and centre-cropped. So a model
    is measured against the data it was trained on, at its own size, and a model whose
    shape no loading can give fails here, before any sampling.
    """
    from udpm.data import load_source

    if image_shape is None:
        real = load_source(source)
    else:
        real = load_source(source, resolution=image_shape[-1], channels=image_shape[0])
    return from_uint8(real.images), real.resolution


def measure(
    fake: torch.Tensor,
    source: str,
    protocol: dict,
    metrics: Sequence[str] = DEFAULT_METRICS,
    feature_net: str | os.PathLike = "emoji32",
    batch_size: int = 256,
    inception_weights: str | os.PathLike | None = None,
    real: torch.Tensor | None = None,
    progress: bool = True,
) -> dict:
    """Metrics of ``fake`` (N, C, H, W) in [-1, 1] against SOURCE, merged with ``protocol``.

    Args:
        source: the reference SOURCE; its identity keys the reference-statistics cache.
        protocol: how ``fake`` was made (`generate` or `read_samples`), copied into the result.
        metrics: any of ``fd``, ``kid``, ``pr``, ``fid``.
        real: the reference images if already loaded (`reference_images`).

    Returns ``compute_metrics``' dictionary, then the protocol, ``reference``,
    ``n_reference`` and ``warnings`` (`udpm.eval.advice.warnings_for`). Raises
    `UDPMError` when the image shapes differ.
    """
    from udpm.eval.advice import warnings_for
    from udpm.eval.compute import compute_metrics
    from udpm.eval.reference import dataset_identity

    if real is None:
        real, _ = reference_images(source)
    if tuple(fake.shape[1:]) != tuple(real.shape[1:]):
        raise UDPMError(
            f"samples have shape {tuple(fake.shape[1:])} but {source} images "
            f"have {tuple(real.shape[1:])}"
        )
    result = compute_metrics(
        fake,
        real,
        metrics=tuple(metrics),
        feature_net=feature_net,
        batch_size=batch_size,
        reference_key=dataset_identity(source),
        inception_weights=inception_weights,
        progress=progress,
    )
    result.update(protocol, reference=source, n_reference=len(real))
    result["warnings"] = warnings_for(source, feature_net, tuple(fake.shape[1:]), len(fake))
    return result


def evaluate(
    pipe_or_images,
    source: str = "emoji32",
    n: int = 2000,
    metrics: Sequence[str] = DEFAULT_METRICS,
    seed: int = 0,
    feature_net: str | os.PathLike = "emoji32",
    batch_size: int = 256,
    inception_weights: str | os.PathLike | None = None,
    progress: bool = True,
    bpd_data: str | None = None,
    bpd_time_samples: int = 8,
    **sampler_kwargs,
) -> dict:
    """The whole protocol in one process: make or read the samples, then `measure` them.

    With ``"bpd"`` in ``metrics`` (a likelihood model only) the result also holds the bound
    on ``bpd_data``'s images (default ``source``), from `udpm.eval.likelihood`.

    Args:
        pipe_or_images: a loaded model (sampled with `generate`: ``n`` images from
            ``seed``), a folder of generated images (`read_samples`; ``n`` and ``seed``
            unused), or a tensor (N, C, H, W) in [-1, 1] of images already generated.
        source: the reference SOURCE.
        sampler_kwargs: ``sampler``, ``steps``, ``eta`` for the diffusion baselines.

    Returns the dictionary ``udpm eval --json`` writes.
    """
    likelihood = {}
    if "bpd" in metrics:
        from udpm.eval.likelihood import evaluate_bpd_source

        metrics = tuple(m for m in metrics if m != "bpd")
        likelihood = evaluate_bpd_source(
            pipe_or_images, bpd_data or source, time_samples=bpd_time_samples, seed=seed
        )
        if not metrics:
            return likelihood
    shape = getattr(pipe_or_images, "image_shape", None)
    if isinstance(pipe_or_images, torch.Tensor):
        shape = tuple(pipe_or_images.shape[1:])
    real, resolution = reference_images(source, shape)  # before sampling: shapes must fit
    if isinstance(pipe_or_images, torch.Tensor):
        fake, protocol = pipe_or_images, {"samples": "tensor"}
    elif isinstance(pipe_or_images, (str, os.PathLike, Path)):
        fake, protocol = read_samples(pipe_or_images, resolution)
    else:
        fake, protocol = generate(
            pipe_or_images, n, seed, batch_size=batch_size, progress=progress, **sampler_kwargs
        )
    result = measure(
        fake,
        source,
        protocol,
        metrics=metrics,
        feature_net=feature_net,
        batch_size=batch_size,
        inception_weights=inception_weights,
        real=real,
    )
    return {**result, **likelihood}
