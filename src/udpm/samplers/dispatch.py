"""Sampling a :class:`~udpm.pipeline.Pipeline` in batches, whatever its method."""

from __future__ import annotations

import torch

from udpm.errors import UDPMError
from udpm.noise import check_shapes


def _progress(total: int, enabled: bool, what: str):
    """A tqdm bar over network calls, or None; returned with the callback that advances it."""
    if not enabled:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=what, unit="call", dynamic_ncols=True)
    return bar, lambda done, of: bar.update(1)


def sample_batches(
    pipe,
    n=16,
    seed=0,
    noises=None,
    class_label=None,
    batch_size=256,
    return_levels=False,
    progress=False,
    callback=None,
    **sampler_options,
):
    """Images ``(n, C, H, W)`` from ``pipe``, ``batch_size`` at a time (same result for any).

    ``callback(calls_done, calls_total)`` follows every network call; ``progress`` shows a
    bar over all of them. The spec of ``pipe``'s method does the sampling.
    """
    spec = pipe.spec
    options = spec.options(sampler_options, pipe.config)
    if return_levels and not spec.has_levels:
        raise UDPMError(f"{spec.name} models have no per-level previews (UDPM has)")
    if noises is not None:
        n = check_shapes(noises, spec.latent_shapes(pipe, options))
    if n < 1:
        raise UDPMError(f"n must be at least 1, got {n}")
    labels = pipe.class_labels(n, class_label, seed)
    starts = range(0, n, batch_size)
    bar, advance = _progress(len(starts), progress and len(starts) > 1, "sampling")
    images, levels = [], []
    for start in starts:
        stop = min(start + batch_size, n)
        part_noises = None if noises is None else [e[start:stop] for e in noises]
        part_labels = None if labels is None else labels[start:stop]
        out = spec.sample(
            pipe, range(seed + start, seed + stop), part_noises, part_labels, options,
            callback, return_levels,
        )  # fmt: skip
        images.append(out.images.cpu())
        if out.levels is not None:
            levels.append(out.levels.cpu())
        if advance:
            advance(1, len(starts))
    if bar is not None:
        bar.close()
    images = torch.cat(images).clamp(-1, 1)
    return (images, torch.cat(levels)) if return_levels else images


def sample_sharded(
    pipe,
    n=16,
    seed=0,
    class_label=None,
    batch_size=256,
    return_levels=False,
    progress=False,
    **sampler_options,
):
    """:func:`sample_batches` spread over the processes of a ``torch.distributed`` group.

    Rank ``r`` samples its contiguous block of the images (seeds ``seed + start ..``) and
    every rank returns all ``n`` in seed order. An image depends on its own seed only, so
    the result is the same for any number of processes and any batch size. Without a
    process group this is ``sample_batches``.
    """
    from udpm.train import distributed as dist

    kwargs = dict(class_label=class_label, batch_size=batch_size, **sampler_options)
    if not dist.is_distributed():
        return sample_batches(
            pipe, n, seed, return_levels=return_levels, progress=progress, **kwargs
        )
    block = dist.shard_range(n)
    if len(block):
        out = sample_batches(
            pipe,
            len(block),
            seed + block.start,
            return_levels=return_levels,
            progress=progress and dist.rank() == 0,
            **kwargs,
        )
    else:  # more processes than images
        out = _empty(pipe, return_levels)
    if return_levels:
        return tuple(dist.all_gather_tensor(part) for part in out)
    return dist.all_gather_tensor(out)


def _empty(pipe, return_levels):
    images = torch.empty((0, *pipe.image_shape))
    if return_levels:
        return images, torch.empty((0, pipe.process.levels, *pipe.image_shape))
    return images
