"""Configuration: the typed config, each method's settings, presets and overrides."""

from udpm.config.overrides import apply_overrides, config_keys, flat_config
from udpm.config.presets import PRESETS, preset_config
from udpm.config.schema import Config
from udpm.config.settings import (
    SETTINGS,
    DDGANSettings,
    DDPMSettings,
    Optim,
    SimpleSettings,
    UDPMSettings,
)

__all__ = [
    "PRESETS",
    "SETTINGS",
    "Config",
    "DDGANSettings",
    "DDPMSettings",
    "Optim",
    "SimpleSettings",
    "UDPMSettings",
    "apply_overrides",
    "config_keys",
    "flat_config",
    "preset_config",
]
