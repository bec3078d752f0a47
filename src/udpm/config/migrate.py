"""Older checkpoints' configs, converted to the current format when they are read.

Until udpm 0.1.0 a config was flat: UDPM's fields and the optimiser (``lr``, ``adam_betas``,
``warmup``, ``grad_clip``) at the top level, and the baselines' settings in an untyped
``diffusion`` dict. Converting keeps what the model was trained with (its optimiser
included); only sampling defaults that were absent then (``clip_x0``) take today's value.
"""

from __future__ import annotations

_UDPM_FIELDS = (
    "alphas",
    "sigmas",
    "factor",
    "kernel",
    "scalar_posterior",
    "lambda_l1",
    "lambda_perceptual",
    "lambda_adv",
    "r1",
    "perceptual",
    "instance_noise",
    "instance_noise_decay",
    "instance_noise_every",
)
_OPTIM_FIELDS = {"lr": "lr", "adam_betas": "betas", "warmup": "warmup", "grad_clip": "grad_clip"}


def is_legacy(values: dict) -> bool:
    return "settings" not in values and any(
        k in values for k in (*_UDPM_FIELDS, *_OPTIM_FIELDS, "diffusion")
    )


def migrate(values: dict) -> dict:
    """A flat (0.1.0) config dict in today's nested form; current dicts pass unchanged."""
    if not is_legacy(values):
        return values
    method = values.get("method", "udpm")
    udpm = {k: values.pop(k) for k in _UDPM_FIELDS if k in values}
    optim = {new: values.pop(old) for old, new in _OPTIM_FIELDS.items() if old in values}
    if optim.get("grad_clip") == 0:
        optim["grad_clip"] = None
    diffusion = values.pop("diffusion", None) or {}
    if method == "udpm":
        # 0.1.0 summed D's two GAN terms: keep that for models trained with it.
        settings = {**udpm, "d_loss": "sum"}
    else:
        settings = _gaussian(diffusion, method)
    if optim:
        settings["optim"] = optim
    values["settings"] = settings
    return values


def _gaussian(diffusion: dict, method: str) -> dict:
    """The 0.1.0 ``diffusion`` dict (with its nested ``process``) as flat settings."""
    import dataclasses

    from udpm.config.settings import SETTINGS

    settings = {k: v for k, v in diffusion.items() if k != "process"}
    process = dict(diffusion.get("process") or {})
    process.pop("kind", None)
    process.pop("resolution", None)  # the continuous shift now follows Config.resolution
    settings.update(process)
    known = (
        {f.name for f in dataclasses.fields(SETTINGS.get(method, object))}
        if method in SETTINGS
        else set(settings)
    )
    # Unset options of the other Gaussian method (e.g. DDPM's multiscale_base: None) go.
    return {k: v for k, v in settings.items() if k in known or v is not None}
