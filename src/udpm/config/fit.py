"""Settings that follow the data: resolution, channels and flips from a `Survey` of SOURCE.

A preset names a data set, but a user's ``--data`` is another: its own size, colours and
classes. Each setting the user did not give is taken from the data and said out loud:

* ``resolution``: the images' native side, rounded up to the nearest size the method
  allows (UDPM's L levels of γ× downsampling need a multiple of γ^L; the U-Net halves
  ``len(channel_mult) - 1`` times), so 28-px digits train at 32 px, 64-px emoji at 64;
* ``channels``: 1 when every image is grey, else 3, so grey stays grey;
* ``hflip``: random mirroring, a free augmentation for photographs and emoji (Ho et al.
  2020 flip CIFAR-10), but it turns digits and letters into other symbols, so it is on for
  colour data and off for grey data.

The class count always comes from the data (the networks are built for it); whether the
model is conditioned on the classes stays the preset's choice, named in the summary.
"""

from __future__ import annotations

from udpm.config.overrides import apply_overrides
from udpm.config.schema import Config
from udpm.errors import UDPMError

FOLLOWED = ("resolution", "channels", "hflip")


def allowed_resolution(config: Config, side: int) -> int:
    """The smallest size at least ``side`` that ``config``'s method and U-Net accept."""
    from udpm.methods import get_spec

    spec = get_spec(config.method)
    halvings = max(len(config.network.get("channel_mult", [1])) - 1, 0)
    for size in range(max(side, 1), 4 * side + 64):
        if size % 2**halvings:  # a full-resolution U-Net; the method checks its own inputs
            continue
        try:
            spec.validate(config.replace(resolution=size))
        except UDPMError:
            continue
        return size
    raise UDPMError(f"no image size near {side} suits this {config.method} config")


def fit_config(config: Config, survey, given: set[str]) -> tuple[Config, list[str]]:
    """``config`` with the settings the user did not give taken from ``survey``.

    Returns the new config and one note per setting taken from the data.
    """
    changes, notes = [], []
    if "channels" not in given:
        channels = 1 if survey.grey else 3
        changes.append(f"channels={channels}")
        if channels == 1:
            why = "every image is grey"
        elif survey.colour < survey.n:
            why = f"{survey.colour} of {survey.n} images in colour; --set channels=1 for grey"
        else:
            why = "colour"
        notes.append(f"channels {channels} ({why})")
    if "resolution" not in given:
        side = survey.side
        size = allowed_resolution(config, side)
        changes.append(f"resolution={size}")
        why = "" if size == side else f", rounded up from {side}: {config.method} needs it"
        notes.append(f"resolution {size}{why} (--resolution to choose)")
    if "hflip" not in given:
        hflip = not survey.grey
        changes.append(f"hflip={str(hflip).lower()}")
        notes.append(
            "random flips on (colour data)"
            if hflip
            else "no flips (grey data: mirrored digits or letters are other symbols)"
        )
    for name in FOLLOWED:
        if name in given:
            value = str(getattr(config, name)).lower()
            notes.append(f"{name} {value} (given, or the named --preset's)")
    return apply_overrides(config, changes), notes


def fit_to_data(config: Config, explicit: set[str]) -> tuple[Config, list[str]]:
    """`fit_config` on a survey of ``config.data``; the start-up lines to print.

    ``explicit`` holds the fields the user set (flags, ``--set``, ``--config``; every field
    when ``--preset`` was named, since a named preset is a choice of its sizes too).
    The first line is the `summary`; each further one names a conversion of the images.
    """
    from udpm.data.survey import survey

    found = survey(config.data)
    fitted, notes = fit_config(config, found, explicit)
    lines = [summary(fitted, found, notes)]
    lines += [f"data: {line}" for line in found.conversions(fitted.resolution, fitted.channels)]
    return fitted, lines


def summary(config: Config, survey, notes: list[str]) -> str:
    """The one start-up line: what was found, and what training will do with it."""
    c, r = config.channels, config.resolution
    classes = len(survey.class_names)
    if config.class_conditional:
        use = f"conditioned on its {classes} classes"
    elif classes:
        use = f"unconditional ({classes} classes unused; --class-conditional to use them)"
    else:
        use = "unconditional"
    shape = f"{r}x{r} {'grey' if c == 1 else 'RGB'}"
    return f"data: {survey.source}: {survey.describe()} -> {shape}, {use}; " + "; ".join(notes)
