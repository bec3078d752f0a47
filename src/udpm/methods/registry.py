"""The registry of methods: ``name -> MethodSpec``, each spec defined in its method's module."""

from __future__ import annotations

import importlib

from udpm.errors import UDPMError
from udpm.methods.spec import MethodSpec

# The module that defines ``SPEC`` for each method; imported on first use.
MODULES = {
    "udpm": "udpm.methods.udpm",
    "ddpm": "udpm.methods.diffusion",
    "simple": "udpm.methods.diffusion",
    "ddgan": "udpm.methods.ddgan",
    "vdm": "udpm.methods.vdm",
    "autoencoder": "udpm.methods.autoencoder",
    "ldm": "udpm.methods.ldm",
}


def names() -> list[str]:
    return list(MODULES)


def get_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered under ``name``."""
    if name not in MODULES:
        raise UDPMError(f"unknown method {name!r}; known: {', '.join(MODULES)}")
    module = importlib.import_module(MODULES[name])
    specs = getattr(module, "SPECS", None) or {module.SPEC.name: module.SPEC}
    return specs[name]
