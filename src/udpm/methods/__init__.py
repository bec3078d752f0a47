"""Methods: one spec and one training class each, behind a registry.

The training loop (``udpm.train.loop``) is shared: data, warm-up, EMA, logging,
checkpoints and resume do not depend on the method. Everything else asks the method's
:class:`~udpm.methods.spec.MethodSpec` (``get_spec``).
"""

from __future__ import annotations

from udpm.methods.registry import get_spec, names


def get_method(name: str):
    """The training class registered under ``name``."""
    return get_spec(name).trainer_class()


__all__ = ["get_method", "get_spec", "names"]
