"""Training: the shared loop, EMA, and torchrun support.

Nothing is imported here eagerly, so that ``import udpm`` (and sampling) never loads the
training loop or the distributed code: ``from udpm.train import train`` loads it on use.
"""

from __future__ import annotations

__all__ = ["PRESETS", "Config", "apply_overrides", "preset_config", "train"]


def __getattr__(name: str):
    if name == "train":
        from udpm.train.loop import train

        return train
    if name in ("PRESETS", "Config", "apply_overrides", "preset_config"):
        import udpm.config

        return getattr(udpm.config, name)
    raise AttributeError(f"module 'udpm.train' has no attribute {name!r}")
