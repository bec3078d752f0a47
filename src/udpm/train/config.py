"""Kept for scripts written against udpm 0.1.0: the config now lives in :mod:`udpm.config`."""

from udpm.config import PRESETS, Config, apply_overrides, flat_config, preset_config

__all__ = ["PRESETS", "Config", "apply_overrides", "flat_config", "preset_config"]
