"""A trained model ready to sample: ``udpm.load(path)``.

The checkpoint carries its config, so this needs only the path. ``udpm.load()`` with no
path loads the model shipped inside the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from udpm.errors import UDPMError
from udpm.processes.upsampling import UpsamplingProcess
from udpm.train.checkpoint import load_model, resolve_model_file
from udpm.train.config import Config

PRETRAINED = "pretrained/emoji32-udpm.safetensors"


def build_process(config: Config) -> UpsamplingProcess:
    from udpm.processes import process_from_config

    return process_from_config(
        {
            "alphas": config.alphas,
            "sigmas": config.sigmas,
            "factor": config.factor,
            "kernel": config.kernel,
        }
    )


def build_network(config: Config, num_classes: int = 0) -> torch.nn.Module:
    """The generator of ``config.method``: UDPM's ends in a pixel shuffle, the others do not."""
    from udpm.networks import UNet

    kwargs = dict(config.network)
    kwargs.setdefault("image_channels", config.channels)
    kwargs["num_classes"] = num_classes if config.class_conditional else 0
    kwargs["out_factor"] = config.factor if config.method == "udpm" else 1
    return UNet(**kwargs)


def pretrained_path() -> Path:
    path = resources.files("udpm") / "assets" / PRETRAINED
    if not path.is_file():
        raise UDPMError("this installation ships no pretrained model (assets/" + PRETRAINED + ")")
    return Path(str(path))


class Pipeline:
    """A generator network, its process and its config.

    Attributes:
        network: the ``nn.Module`` (EMA weights, eval mode).
        process: the process it was trained with.
        config: the resolved training :class:`Config`.
        meta: the checkpoint metadata (step, hashes, class names, ...).
    """

    def __init__(self, network, process, config: Config, meta: dict | None = None):
        self.network, self.process, self.config = network.eval(), process, config
        self.meta = meta or {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.config.channels, self.config.resolution, self.config.resolution)

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes", 0)) if self.config.class_conditional else 0

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device) -> Pipeline:
        self.network.to(device)
        return self

    def accelerate(self, **options) -> Pipeline:
        """A pipeline sampling through :func:`udpm.accel.accelerate` (``compile``,
        ``channels_last``, ``autocast_dtype``, ``cuda_graph``); ``self`` is unchanged."""
        from udpm.accel import accelerate

        network = accelerate(self.network, **options)
        return Pipeline(network, self.process, self.config, self.meta)

    def class_labels(self, n: int, class_label: int | None, seed: int) -> torch.Tensor | None:
        """Labels for ``n`` images: the given class, or per-seed random classes."""
        if not self.num_classes:
            if class_label is not None:
                raise UDPMError("this model is unconditional; it takes no class label")
            return None
        if class_label is not None:
            if not 0 <= class_label < self.num_classes:
                raise UDPMError(f"class must be in 0..{self.num_classes - 1}, got {class_label}")
            return torch.full((n,), class_label, dtype=torch.long)
        return torch.tensor(
            [
                torch.randint(
                    self.num_classes, (1,), generator=torch.Generator().manual_seed(seed + i + 7919)
                ).item()
                for i in range(n)
            ]
        )

    def sample(
        self,
        n: int = 16,
        seed: int = 0,
        noises=None,
        class_label: int | None = None,
        batch_size: int = 256,
        return_levels: bool = False,
        progress: bool = False,
        **sampler_kwargs,
    ):
        """``n`` images in ``[-1, 1]``, shape ``(n, C, H, W)``; image ``i`` uses seed ``seed+i``.

        ``noises`` (UDPM: the ``L`` per-level maps) overrides ``n`` and ``seed``.
        """
        from udpm.samplers.dispatch import sample_batches

        return sample_batches(
            self,
            n=n,
            seed=seed,
            noises=noises,
            class_label=class_label,
            batch_size=batch_size,
            return_levels=return_levels,
            progress=progress,
            **sampler_kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"Pipeline(method={self.config.method}, image_shape={self.image_shape}, "
            f"step={self.meta.get('step')}, process={self.process!r})"
        )


def load(path: str | Path | None = None, device: str | torch.device = "cpu") -> Pipeline:
    """Load a checkpoint (model file or run directory); ``None`` means the shipped model."""
    file = pretrained_path() if path is None else resolve_model_file(Path(path))
    state, meta = load_model(file)
    config = Config.from_dict(meta["config"])
    network = build_network(config, num_classes=int(meta.get("num_classes", 0)))
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UDPMError(f"checkpoint {file} does not match its own config ({first})")
    process = build_process_for(config)
    meta = {**meta, "path": str(file)}
    return Pipeline(network.to(device), process, config, meta)


def build_process_for(config: Config):
    """The process of ``config.method``."""
    if config.method == "udpm":
        return build_process(config)
    from udpm.methods.diffusion import build_gaussian_process

    return build_gaussian_process(config)
