"""Training methods: each builds its networks and optimisers and performs one step.

The training loop (``udpm.train.loop``) is shared: data, warm-up, EMA, logging,
checkpoints and resume do not depend on the method.
"""

from __future__ import annotations


def get_method(name: str):
    """The method class registered under ``name``."""
    from udpm.errors import UDPMError

    if name == "udpm":
        from udpm.methods.udpm import UDPMMethod

        return UDPMMethod
    if name in ("ddpm", "simple"):
        from udpm.methods.diffusion import DiffusionMethod

        return DiffusionMethod
    raise UDPMError(f"unknown method {name!r}; known: udpm, ddpm, simple")
