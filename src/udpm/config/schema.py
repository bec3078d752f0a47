"""The training configuration: a frozen dataclass with one typed sub-config per method.

``Config`` holds what every method shares (data, network size, batch, steps, EMA, logging);
``Config.settings`` is the method's own frozen dataclass (``udpm.config.settings``), which
carries its paper's optimiser (:class:`Optim`). A resolved config is stored in every run
directory (``config.yaml``) and inside every checkpoint, so sampling needs only the path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from udpm.config.settings import SETTINGS, UDPMSettings
from udpm.config.typed import build_dataclass
from udpm.errors import UDPMError

Method = Literal["udpm", "ddpm", "simple", "ddgan", "vdm", "autoencoder", "ldm"]
Amp = Literal["auto", "bf16", "fp32"]


@dataclass(frozen=True)
class Config:
    # --- what and on which data -------------------------------------------------------
    method: Method = "udpm"  # the training objective and sampler family (udpm.methods)
    data: str = "emoji32"  # SOURCE: .npz, image folder, .zip, CIFAR tarball or embedded name
    resolution: int = 32  # images are resized and centre-cropped to this side length
    channels: int = 3  # 3 = RGB, 1 = greyscale
    class_conditional: bool = False  # feed the data set's labels to the networks
    hflip: bool = True  # random horizontal flips
    max_images: int | None = None  # use only the first N images (quick experiments)
    max_pixels: int | None = 8192 * 8192  # refuse larger images before decoding them
    # --- networks: keyword arguments of udpm.networks.UNet / Discriminator -------------
    network: dict = field(default_factory=dict)
    discriminator: dict = field(default_factory=dict)
    # --- the method's own settings, optimiser included ---------------------------------
    settings: Any = field(default_factory=UDPMSettings)
    # --- optimisation shared by every method -------------------------------------------
    batch_size: int = 64  # global batch
    micro_batch: int | None = None  # per-device micro-batch (gradient accumulation)
    steps: int = 600_000
    ema_decay: float = 0.9999
    # --- bookkeeping ------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Amp = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    log_every: int = 50
    sample_every: int = 1000  # fixed-seed sample grid PNG
    checkpoint_every: int = 1000
    keep: int = 3  # keep the last K checkpoints
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def __post_init__(self):
        # Plain lists inside the network dicts, as YAML gives them back: equal after a round trip.
        object.__setattr__(self, "network", _plain(dict(self.network)))
        object.__setattr__(self, "discriminator", _plain(dict(self.discriminator)))
        expected = SETTINGS[self.method]
        if not isinstance(self.settings, expected):
            raise UDPMError(
                f"method {self.method} needs {expected.__name__} settings, "
                f"got {type(self.settings).__name__}"
            )
        _check_positive(self)

    @property
    def optim(self):
        """The method's optimiser settings (``settings.optim``)."""
        return self.settings.optim

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """Rebuild a config from :meth:`to_dict` (or an older flat format, converted)."""
        from udpm.config.migrate import migrate

        values = migrate(dict(values))
        method = values.get("method", "udpm")
        if method not in SETTINGS:
            raise UDPMError(f"unknown method {method!r}; known: {', '.join(SETTINGS)}")
        settings = build_dataclass(SETTINGS[method], values.pop("settings", {}) or {}, "settings")
        return build_dataclass(cls, {**values, "settings": settings}, "config")

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


def _check_positive(config: Config) -> None:
    for name in ("batch_size", "steps", "log_every", "sample_every", "checkpoint_every", "keep"):
        if getattr(config, name) < 1:
            raise UDPMError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.micro_batch is not None and config.micro_batch < 1:
        raise UDPMError(f"micro_batch must be at least 1, got {config.micro_batch}")
    if not (0.0 <= config.ema_decay < 1.0):
        raise UDPMError(f"ema_decay must lie in [0, 1), got {config.ema_decay}")
    lr = config.settings.optim.lr
    if not (math.isfinite(lr) and lr > 0):
        raise UDPMError(f"the learning rate must be a positive number, got {lr}")


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so YAML and JSON stay plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
