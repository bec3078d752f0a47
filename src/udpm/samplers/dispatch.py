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
