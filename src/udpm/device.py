"""Which device and which precision: one place for the choice every command makes."""

from __future__ import annotations

import torch

from udpm.errors import UDPMError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UDPMError(f"device {name} requested but CUDA is not available")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device):
    """bf16 autocast on CUDA, full fp32 on CPU (``amp: auto``)."""
    if amp == "fp32" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp in ("bf16", "auto"):
        return torch.bfloat16
    raise UDPMError(f"amp must be auto, bf16 or fp32, got {amp!r}")
