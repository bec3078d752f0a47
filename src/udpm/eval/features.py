"""The feature network that Fréchet distance, KID and precision/recall are measured in.

Inception-v3 needs a download and was trained on ImageNet photographs, which says little
about 32×32 emoji. So the project trains its own small classifier on the embedded data set
and ships its weights (`udpm/assets/features/emoji32.safetensors`, 1.6 MB). The feature
of an image is the network's penultimate layer: the global average of the last conv block,
``D = widths[-1]`` = 256 numbers, the analogue of Inception's 2048-d pool3 feature.

Retrain the shipped weights (deterministic given ``--seed``; a few minutes on one CPU core)::

    udpm features --data emoji32 --out src/udpm/assets/features/emoji32.safetensors

Distances measured with different feature networks are not comparable, so every result
carries `feature_network_hash`, a digest of the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from udpm.errors import UDPMError

#: How inputs of another size are brought to the training resolution. Part of every
#: reference-statistics key, because another resize gives other features.
RESIZE_MODE = "bilinear-antialias"

SHIPPED_FEATURE_NETWORKS = ("emoji32",)


@dataclass(frozen=True)
class FeatureNetConfig:
    """Architecture of `FeatureNet`; stored in the weights file so loading needs nothing else."""

    resolution: int = 32  # inputs are resized to resolution × resolution
    in_channels: int = 3  # grey inputs are repeated to this many channels
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per stage; the feature is widths[-1]
    convs_per_stage: int = 1  # 3×3 conv + BatchNorm + ReLU blocks per stage, then 2×2 max pool
    num_classes: int = 9  # classifier head size (only used while training)
    class_names: tuple[str, ...] = field(default=())


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class FeatureNet(nn.Module):
    """A small VGG-style classifier whose penultimate layer is the feature.

    ``forward(x)``: images in [-1, 1], (N, C, H, W), C = 1 or 3, any H, W -> features (N, D).
    ``logits(x)``: the same images -> class scores (N, num_classes), for training.
    """

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], config.in_channels
        for i, width in enumerate(config.widths):
            for j in range(config.convs_per_stage):
                layers.append(_conv_block(c_in if j == 0 else width, width))
            if i < len(config.widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(config.widths[-1], config.num_classes)
        # torchmetrics reads this instead of pushing a dummy 299×299 image through the network.
        self.num_features = config.widths[-1]
        self.resize_mode = RESIZE_MODE

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Bring images to the channels and resolution the network was trained on."""
        if x.ndim != 4:
            raise UDPMError(f"feature network expects images (N, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1 and self.config.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != self.config.in_channels:
            raise UDPMError(
                f"feature network expects {self.config.in_channels} channels, got {x.shape[1]}"
            )
        size = self.config.resolution
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return x.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x)).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self(x))


class TorchmetricsFeature(nn.Module):
    """Adapts a feature network to torchmetrics' custom-feature convention.

    torchmetrics hands a custom ``feature`` module the images exactly as given to ``update``;
    with ``normalize=True`` those are floats in [0, 1]. This maps them to [-1, 1], the range
    `FeatureNet` expects, and keeps the wrapped network in evaluation mode, since
    ``Metric.train()`` would otherwise switch its BatchNorm layers to batch statistics.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()
        self.num_features = net.num_features

    def train(self, mode: bool = True) -> TorchmetricsFeature:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return self.net(images01 * 2 - 1)


# ---------------------------------------------------------------------------------------
# Loading, saving and identity.


def shipped_weights_path(name: str) -> Path:
    """Path of a feature network that ships with the package (`SHIPPED_FEATURE_NETWORKS`)."""
    return Path(str(resources.files("udpm") / "assets" / "features" / f"{name}.safetensors"))


def save_feature_network(net: FeatureNet, path: str | os.PathLike, info: dict) -> None:
    """Write the weights and a self-description (config, data, accuracies) as safetensors."""
    metadata = {"config": json.dumps(asdict(net.config)), "resize_mode": RESIZE_MODE}
    metadata.update({k: json.dumps(v) for k, v in info.items()})
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, os.fspath(path), metadata=metadata)


def read_feature_metadata(name_or_path: str | os.PathLike = "emoji32") -> dict:
    """The metadata stored with a feature network, JSON values decoded."""
    path = _resolve(name_or_path)
    with safe_open(os.fspath(path), framework="pt") as f:
        raw = f.metadata() or {}
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value
    return decoded


def load_feature_network(name_or_path: str | os.PathLike = "emoji32") -> FeatureNet:
    """A frozen feature network in evaluation mode.

    Args:
        name_or_path: the name of a shipped network (``"emoji32"``) or the path of a
            ``.safetensors`` file written by `save_feature_network` / the training command.

    The module maps images in [-1, 1], (N, C, H, W), to features (N, D); inputs of another
    size are resized (`RESIZE_MODE`) to its training resolution.
    """
    path = _resolve(name_or_path)
    meta = read_feature_metadata(path)
    if "config" not in meta:
        raise UDPMError(f"{path} is not a udpm feature network (no 'config' in its metadata)")
    config = meta["config"]
    config = FeatureNetConfig(
        **{**config, "widths": tuple(config["widths"]), "class_names": tuple(config["class_names"])}
    )
    net = FeatureNet(config)
    with safe_open(os.fspath(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    net.load_state_dict(state)
    net.name = meta.get("name", Path(path).stem)
    return net.eval().requires_grad_(False)


def feature_network_hash(module: nn.Module, length: int = 16) -> str:
    """Short hex sha256 of a module's weights (names, shapes, dtypes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:length]


def _resolve(name_or_path: str | os.PathLike) -> Path:
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if name in SHIPPED_FEATURE_NETWORKS:
        return shipped_weights_path(name)
    raise UDPMError(
        f"unknown feature network {name!r}: give a .safetensors path or one of "
        f"{', '.join(SHIPPED_FEATURE_NETWORKS)}"
    )
