"""Training: config and presets, the shared loop, EMA and checkpoints."""

from udpm.train.config import PRESETS, Config, apply_overrides, preset_config
from udpm.train.loop import train

__all__ = ["PRESETS", "Config", "apply_overrides", "preset_config", "train"]
