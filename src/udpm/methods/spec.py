"""What a method is to the rest of the package: one small, typed spec per method.

``udpm.load``, sampling, the trainer, ``udpm info`` and the latent tools ask the spec of a
config's method instead of comparing method names. A new method is one spec (this file's
:class:`MethodSpec`, filled in by the method's own module) and one training class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class SampleResult:
    """What a method's sampler returns: the images and, where the method has them, previews.

    Attributes:
        images: (N, C, H, W) in roughly [-1, 1] (clamped by the caller).
        levels: (N, K, C, H, W) intermediate predictions mapped to full size, or None.
    """

    images: torch.Tensor
    levels: torch.Tensor | None = None


@dataclass(frozen=True)
class MethodSpec:
    """How one method resolves its config, builds its parts and samples.

    Attributes:
        name: the ``--method`` name.
        settings: the frozen dataclass of the method's own config (``Config.settings``); it has
            an ``optim`` field (:class:`udpm.config.Optim`) with the method's paper optimiser.
        trainer: ``"module:Class"`` of the training class (a ``udpm.methods.base.Method``),
            imported only when training, so sampling never loads the training code.
        build_process: ``config -> process`` (no networks inside).
        build_generator: ``(config, num_classes) -> nn.Module``, the network a model file
            holds (EMA weights); the trainer builds any other network (a discriminator).
        sample: ``(pipe, seeds, noises, class_labels, options, callback, return_levels) ->
            SampleResult`` for one batch: image ``i`` uses seed ``seeds[i]`` unless
            ``noises`` (the explicit latent) is given; ``options`` are the method's sampler
            options (see ``sampler_options``), already merged with the defaults.
        latent_shapes: ``(pipe, options) -> [shape of one image's map, ..]``: the noise maps its
            sampler consumes, in order; they are the image's latent.
        preview_options: sampler options for the training-time sample grids (cheap ones).
        sampler_options: the keyword options ``sample`` accepts, with their defaults.
        describe: ``config -> str``, a one-line human summary for ``udpm info``.
        validate: ``config -> None``; raises a one-line error for a config the method
            cannot train (checked before a run directory is created).
        has_levels: the sampler can return per-level previews (``return_levels``).
        deterministic_given_noise: sampling is a function of the noise maps alone.
    """

    name: str
    settings: type
    trainer: str
    build_process: Callable[[Any], Any]
    build_generator: Callable[[Any, int], torch.nn.Module]
    sample: Callable[..., SampleResult]
    latent_shapes: Callable[[Any, dict], list[tuple]]
    sampler_options: dict[str, Any] = field(default_factory=dict)
    preview_options: dict[str, Any] = field(default_factory=dict)
    describe: Callable[[Any], str] = lambda config: config.method
    validate: Callable[[Any], None] = lambda config: None
    has_levels: bool = False
    deterministic_given_noise: bool = True

    def trainer_class(self):
        import importlib

        module, _, name = self.trainer.partition(":")
        return getattr(importlib.import_module(module), name)

    def options(self, given: dict | None, config=None) -> dict:
        """The sampler options: the given ones (None means default) over the defaults.

        The defaults are ``sampler_options``, overridden by same-named fields of the model's
        settings (e.g. a DDPM model's ``sampler``, ``clip_x0``, or ``sample_steps`` for
        ``steps``).
        """
        from udpm.errors import UDPMError

        given = {k: v for k, v in (given or {}).items() if v is not None}
        unknown = sorted(set(given) - set(self.sampler_options))
        if unknown:
            known = ", ".join(sorted(self.sampler_options)) or "none"
            raise UDPMError(
                f"{self.name} sampling takes no option(s) {', '.join(unknown)}; known: {known}"
            )
        defaults = dict(self.sampler_options)
        if config is not None:
            for key in defaults:
                for name in (key, f"sample_{key}"):  # e.g. settings.sample_steps -> steps
                    if hasattr(config.settings, name):
                        defaults[key] = getattr(config.settings, name)
        return {**defaults, **given}


def image_shape(config) -> tuple[int, int, int]:
    return (config.channels, config.resolution, config.resolution)


def build_unet(config, num_classes: int = 0, out_factor: int = 1) -> torch.nn.Module:
    """The U-Net of ``config.network``; UDPM's ends in a pixel shuffle (``out_factor = γ``)."""
    from udpm.networks import UNet

    kwargs = dict(config.network)
    kwargs.setdefault("image_channels", config.channels)
    kwargs["num_classes"] = num_classes if config.class_conditional else 0
    kwargs["out_factor"] = out_factor
    return UNet(**kwargs)
