"""Samplers: plain functions ``sample_*(network, process, ...)``."""

from udpm.samplers.udpm import check_noises, level_shapes, sample_udpm, seeded_noises

__all__ = ["check_noises", "level_shapes", "sample_udpm", "seeded_noises"]
