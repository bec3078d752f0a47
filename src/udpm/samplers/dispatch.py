"""Sampling a :class:`~udpm.pipeline.Pipeline` in batches, whatever its method."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from udpm.samplers.udpm import check_noises, sample_udpm, seeded_noises


def _udpm_batch(pipe, seeds, noises, labels, return_levels, **_):
    if noises is None:
        noises = seeded_noises(pipe.process, pipe.image_shape, seeds)
    return sample_udpm(
        pipe.network,
        pipe.process,
        pipe.image_shape,
        noises=noises,
        class_labels=labels,
        return_levels=return_levels,
    )


def sample_batches(
    pipe,
    n=16,
    seed=0,
    noises=None,
    class_label=None,
    batch_size=256,
    return_levels=False,
    progress=False,
    **sampler_kwargs,
):
    """Images ``(n, C, H, W)`` from ``pipe``, ``batch_size`` at a time (same result for any)."""
    method = pipe.config.method
    if noises is not None:
        if method == "udpm":
            check_noises(pipe.process, noises, pipe.image_shape)
        n = noises[0].shape[0]
    labels = pipe.class_labels(n, class_label, seed)
    images, levels = [], []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="sampling", disable=not progress or len(starts) < 2):
        stop = min(start + batch_size, n)
        seeds = range(seed + start, seed + stop)
        part_noises = None if noises is None else [e[start:stop] for e in noises]
        part_labels = None if labels is None else labels[start:stop]
        if method == "udpm":
            out = _udpm_batch(pipe, seeds, part_noises, part_labels, return_levels)
        else:
            from udpm.methods.diffusion import sample_diffusion

            out = sample_diffusion(pipe, seeds, part_noises, part_labels, **sampler_kwargs)
        if return_levels and method == "udpm":
            out, previews = out
            levels.append(torch.stack(previews, 1).cpu())
        images.append(out.cpu())
    images = torch.cat(images).clamp(-1, 1)
    return (images, torch.cat(levels)) if return_levels and method == "udpm" else images


def sample_sharded(
    pipe,
    n=16,
    seed=0,
    class_label=None,
    batch_size=256,
    return_levels=False,
    progress=False,
    **sampler_kwargs,
):
    """:func:`sample_batches` spread over the processes of a ``torch.distributed`` group.

    Rank ``r`` samples its contiguous block of the images (seeds ``seed + start ..``) and
    every rank returns all ``n`` in seed order. An image depends on its own seed only, so
    the result is the same for any number of processes and any batch size. Without a
    process group this is ``sample_batches``.
    """
    from udpm.train import distributed as dist

    kwargs = dict(class_label=class_label, batch_size=batch_size, **sampler_kwargs)
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
    if return_levels and pipe.config.method == "udpm":
        return tuple(dist.all_gather_tensor(part) for part in out)
    return dist.all_gather_tensor(out)


def _empty(pipe, return_levels):
    images = torch.empty((0, *pipe.image_shape))
    if return_levels and pipe.config.method == "udpm":
        return images, torch.empty((0, pipe.process.levels, *pipe.image_shape))
    return images
