"""A trained model ready to sample: ``udpm.load(path)``.

The checkpoint carries its config, so this needs only the path. ``udpm.load()`` with no
path loads the model shipped inside the package. Everything method-specific is asked of
the model's :class:`~udpm.methods.spec.MethodSpec`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from udpm.checkpoint import load_model, resolve_model_file
from udpm.config import Config
from udpm.errors import UDPMError
from udpm.methods.registry import get_spec

PRETRAINED = "pretrained/emoji32-udpm.safetensors"


def pretrained_path() -> Path:
    path = resources.files("udpm") / "assets" / PRETRAINED
    if not path.is_file():
        raise UDPMError("this installation ships no pretrained model (assets/" + PRETRAINED + ")")
    return Path(str(path))


def model_file(path: str | Path) -> Path:
    """The model file ``path`` names (a file or a run directory's newest), refusing state files.

    ``state-STEP.pt`` holds what ``--resume`` needs (both networks, optimisers, RNGs); the
    model to sample or describe is the ``model-STEP.safetensors`` beside it.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        twin = path.with_name(path.name.replace("state-", "model-")).with_suffix(".safetensors")
        hint = twin if twin.is_file() else path.parent.parent
        raise UDPMError(
            f"{path} is a training state file (read by 'udpm train --resume'); give the model "
            f"file or the run directory instead: {hint}"
        )
    return resolve_model_file(path)


def build_network(config: Config, num_classes: int = 0) -> torch.nn.Module:
    """The generator of ``config.method`` (its model file's network)."""
    return get_spec(config.method).build_generator(config, num_classes)


def build_process_for(config: Config):
    """The process of ``config.method``."""
    return get_spec(config.method).build_process(config)


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
        if hasattr(process, "bind"):  # a process read off its network (VDM's learned γ)
            self.process = process.bind(network)
        self.meta = meta or {}

    @classmethod
    def from_config(cls, config: Config, num_classes: int = 0, device="cpu") -> Pipeline:
        """An untrained pipeline of ``config`` (random weights; benchmarks, tests)."""
        network = build_network(config, num_classes).to(device)
        return cls(network, build_process_for(config), config, {"num_classes": num_classes})

    @property
    def spec(self):
        return get_spec(self.config.method)

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

    def sampler_options(self, **given) -> dict:
        """This model's sampler options: ``given`` over its settings and its method's defaults."""
        return self.spec.options(given, self.config)

    def latent_shapes(self, **sampler_options) -> list[tuple]:
        """Shapes of one image's noise maps, in the order its sampler consumes them."""
        return self.spec.latent_shapes(self, self.sampler_options(**sampler_options))

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
        **sampler_options,
    ):
        """``n`` images in ``[-1, 1]``, shape ``(n, C, H, W)``; image ``i`` uses seed ``seed+i``.

        ``noises`` (the latent: the maps of :meth:`latent_shapes`, each (N, ...)) overrides
        ``n`` and ``seed``. ``return_levels`` (UDPM) also returns the per-level previews
        (n, L, C, H, W); other methods raise a one-line error. ``sampler_options`` are the
        method's (DDPM/DDIM: ``sampler``, ``steps``, ``eta``, ``clip_x0``).
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
            **sampler_options,
        )

    def __repr__(self) -> str:
        return (
            f"Pipeline(method={self.config.method}, image_shape={self.image_shape}, "
            f"step={self.meta.get('step')}, process={self.process!r})"
        )


def load(
    path: str | Path | None = None, device: str | torch.device = "cpu", **config_changes
) -> Pipeline:
    """Load a checkpoint (model file or run directory); ``None`` means the shipped model.

    ``config_changes`` replace settings that only affect sampling, e.g.
    ``udpm.load(path, scalar_posterior=True)`` samples with the authors' posterior.
    """
    file = pretrained_path() if path is None else model_file(path)
    state, meta = load_model(file)
    config = Config.from_dict(meta["config"])
    if config_changes:
        config = _with_settings(config, config_changes)
    network = build_network(config, num_classes=int(meta.get("num_classes", 0)))
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UDPMError(f"checkpoint {file} does not match its own config ({first})")
    meta = {**meta, "path": str(file)}
    return Pipeline(network.to(device), build_process_for(config), config, meta)


def _with_settings(config: Config, changes: dict) -> Config:
    import dataclasses

    from udpm.config.typed import build_dataclass

    values = {f.name: getattr(config.settings, f.name) for f in dataclasses.fields(config.settings)}
    unknown = sorted(set(changes) - set(values))
    if unknown:
        raise UDPMError(f"{config.method} models have no setting(s) {', '.join(unknown)}")
    settings = build_dataclass(type(config.settings), {**values, **changes}, "settings")
    return config.replace(settings=settings)
