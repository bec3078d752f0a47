"""Training configuration: one dataclass, a registry of presets, and command-line overrides.

A resolved config is stored in every run directory (``config.yaml``) and inside every
checkpoint, so sampling needs nothing but the checkpoint path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from udpm.errors import UDPMError


@dataclass
class Config:
    # --- what and on which data -------------------------------------------------------
    method: str = "udpm"  # udpm | ddpm | simple  (the training objective and sampler family)
    data: str = "emoji32"  # SOURCE: .npz, image folder, .zip, CIFAR tarball or embedded name
    resolution: int = 32  # images are resized and centre-cropped to this side length
    channels: int = 3  # 3 = RGB, 1 = greyscale
    class_conditional: bool = False  # feed the data set's labels to the networks
    hflip: bool = True  # random horizontal flips
    max_images: int | None = None  # use only the first N images (quick experiments)
    # --- the UDPM process (UDPM paper, every data set) -------------------------------
    alphas: tuple = (0.5, 0.2, 1e-3)
    sigmas: tuple = (0.1, 0.2, 0.3)
    factor: int = 2  # γ
    kernel: list | None = None  # blur kernel (γ×γ); None = unit-norm box
    # --- networks: keyword arguments of udpm.networks.UNet / Discriminator -------------
    network: dict = field(default_factory=dict)
    discriminator: dict = field(default_factory=dict)
    # --- UDPM loss weights, one entry per level 1..L (design page, "Training") ----------
    lambda_l1: tuple = (1.0, 1.0, 0.0)
    lambda_perceptual: tuple = (4.0, 4.0, 0.0)
    lambda_adv: tuple = (0.2, 0.5, 1.0)
    r1: tuple = (0.025, 0.1, 0.4)  # R1 weight on real inputs of D, per level
    perceptual: str = "lpips"  # lpips | none; lpips needs the optional extra and VGG weights
    instance_noise: float = 0.4  # std of the noise added to D's inputs ...
    instance_noise_decay: float = 0.99  # ... multiplied by this ...
    instance_noise_every: int = 1000  # ... every this many steps
    # --- diffusion baselines (method ddpm | simple) ------------------------------------
    diffusion: dict = field(default_factory=dict)
    # --- optimisation ------------------------------------------------------------------
    batch_size: int = 64  # global batch
    micro_batch: int | None = None  # per-device micro-batch (gradient accumulation)
    steps: int = 600_000
    lr: float = 1e-4  # Adam, for G and D
    adam_betas: tuple = (0.5, 0.9)  # DDGAN's choice for adversarial training
    warmup: int = 5000  # linear learning-rate warm-up, in steps
    ema_decay: float = 0.9999
    grad_clip: float = 1.0  # max global gradient norm, per network
    # --- bookkeeping ------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    log_every: int = 50
    sample_every: int = 1000  # fixed-seed sample grid PNG
    checkpoint_every: int = 1000
    keep: int = 3  # keep the last K checkpoints
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UDPMError(f"unknown config field(s): {', '.join(unknown)}")
        tuples = {f.name for f in dataclasses.fields(cls) if f.type == "tuple"}
        values = {k: tuple(v) if k in tuples and v is not None else v for k, v in values.items()}
        return cls(**values)

    @property
    def levels(self) -> int:
        return len(self.alphas)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so YAML and JSON stay plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# Paper hyperparameters (UDPM, NeurIPS 2024, Tables 3-5 and the design page). The paper's
# text does not give the generator's dropout; the network presets use EDM's values.
_PAPER_COMMON = dict(
    lr=1e-4,
    warmup=5000,
    ema_decay=0.9999,
    batch_size=64,
    steps=600_000,
    lambda_l1=(1.0, 1.0, 0.0),
    lambda_perceptual=(4.0, 4.0, 0.0),
    lambda_adv=(0.2, 0.5, 1.0),
)

PRESETS: dict[str, dict] = {
    "cifar10": dict(
        _PAPER_COMMON,
        data="cifar-10-python.tar.gz",
        resolution=32,
        class_conditional=True,
        r1=(0.025, 0.1, 0.4),
        network_preset="cifar10",
        discriminator_preset="cifar10",
        discriminator_overrides={"dropout": 0.4},
    ),
    "ffhq64": dict(
        _PAPER_COMMON,
        data="ffhq64.zip",
        resolution=64,
        r1=(0.1, 0.4, 0.8),
        network_preset="ffhq64",
        discriminator_preset="ffhq64",
        discriminator_overrides={"dropout": 0.2},
    ),
    "afhqv2-64": dict(
        _PAPER_COMMON,
        data="afhqv2-64.zip",
        resolution=64,
        r1=(0.1, 0.4, 0.8),
        network_preset="afhqv2-64",
        discriminator_preset="afhqv2-64",
        discriminator_overrides={"dropout": 0.3},
    ),
    # Small enough for 2 CPU cores; see README "Pretrained model" for its measured quality.
    "emoji32-cpu": dict(
        data="emoji32",
        resolution=32,
        batch_size=32,
        steps=6000,
        lr=2e-4,
        warmup=200,
        ema_decay=0.999,
        r1=(0.025, 0.1, 0.4),
        perceptual="none",
        lambda_l1=(1.0, 1.0, 0.0),
        lambda_perceptual=(0.0, 0.0, 0.0),
        lambda_adv=(0.2, 0.5, 1.0),
        instance_noise_every=200,
        network_preset="emoji32-cpu",
        discriminator_preset="emoji32-cpu",
        log_every=25,
        sample_every=250,
        checkpoint_every=250,
        threads=None,
    ),
    # Baselines at the same network size and budget as emoji32-cpu, for the benchmark.
    "emoji32-cpu-ddpm": dict(
        method="ddpm",
        data="emoji32",
        resolution=32,
        batch_size=32,
        steps=6000,
        lr=2e-4,
        warmup=200,
        ema_decay=0.999,
        network_preset="emoji32-cpu",
        discriminator_preset="emoji32-cpu",
        log_every=25,
        sample_every=500,
        checkpoint_every=250,
    ),
    "emoji32-cpu-simple": dict(
        method="simple",
        data="emoji32",
        resolution=32,
        batch_size=32,
        steps=6000,
        lr=2e-4,
        warmup=200,
        ema_decay=0.999,
        network_preset="emoji32-cpu",
        discriminator_preset="emoji32-cpu",
        diffusion={"multiscale_base": 16},
        log_every=25,
        sample_every=500,
        checkpoint_every=250,
    ),
    # DDPM's CIFAR-10 settings (Ho et al. 2020, Appendix B): 35.7M-parameter U-Net, ch 128,
    # mult (1,2,2,2), 2 blocks, attention at 16x16, dropout 0.1, lr 2e-4, batch 128,
    # 800k steps, EMA 0.9999, T = 1000, linear betas.
    "cifar10-ddpm": dict(
        method="ddpm",
        data="cifar-10-python.tar.gz",
        resolution=32,
        batch_size=128,
        steps=800_000,
        lr=2e-4,
        warmup=5000,
        ema_decay=0.9999,
        network_preset="cifar10",
        discriminator_preset="cifar10",
        network_overrides={
            "model_channels": 128,
            "channel_mult": (1, 2, 2, 2),
            "num_blocks": 2,
            "attn_resolutions": (16,),
            "dropout": 0.1,
            "resolution": 32,
            "embedding": "positional",
        },
    ),
}


def preset_config(name: str) -> Config:
    """The resolved :class:`Config` of a preset (network dicts filled in)."""
    from udpm.networks import DISC_PRESETS, UNET_PRESETS

    if name not in PRESETS:
        raise UDPMError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    values = dict(PRESETS[name])
    network = dict(UNET_PRESETS[values.pop("network_preset")])
    network.update(values.pop("network_overrides", {}))
    disc = dict(DISC_PRESETS[values.pop("discriminator_preset")])
    disc.update(values.pop("discriminator_overrides", {}))
    return Config(**values, network=network, discriminator=disc)


def apply_overrides(config: Config, assignments: list[str]) -> Config:
    """Apply ``key=value`` strings; ``value`` is parsed as YAML, ``network.dropout=0.2`` nests."""
    values = config.to_dict()
    for item in assignments:
        if "=" not in item:
            raise UDPMError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UDPMError(f"cannot parse the value of override {item!r}") from exc
        target, *rest = key.strip().split(".")
        if target not in values:
            raise UDPMError(f"unknown config field {target!r} in override {item!r}")
        if rest:
            if not isinstance(values[target], dict):
                raise UDPMError(f"config field {target!r} has no sub-fields ({item!r})")
            values[target][".".join(rest)] = value
        else:
            values[target] = value
    return Config.from_dict(values)
