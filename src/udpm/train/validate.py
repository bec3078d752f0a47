"""Checks made before a run creates anything: config values, the device, the output path.

Each failure is a one-line :class:`UDPMError` naming the field and the value, so that a
bad number never reaches the loop as an "internal error" and never leaves a directory
behind. Fields are read with ``getattr`` so the checks survive a reshaped config.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import torch

from udpm.errors import UDPMError

# field: (smallest allowed value, may it be None)
_INTS = {
    "steps": (1, False),
    "batch_size": (1, False),
    "micro_batch": (1, True),
    "warmup": (0, False),
    "log_every": (1, False),
    "sample_every": (1, False),
    "checkpoint_every": (1, False),
    "keep": (1, False),  # the newest checkpoint is the resume point
    "threads": (1, True),
    "max_images": (1, True),
    "resolution": (1, False),
    "seed": (-(2**63), False),
}
# field: (lowest, highest, is the lowest itself allowed)
_FLOATS = {"lr": (0.0, math.inf, False), "ema_decay": (0.0, 1.0, True)}
_FLOATS["grad_clip"] = (0.0, math.inf, False)


def check_config(config) -> None:
    """Raise on the first config value of the wrong type or out of range."""
    for name, (low, optional) in _INTS.items():
        value = getattr(config, name, None)
        if value is None and (optional or not hasattr(config, name)):
            continue
        if not _is_int(value) or value < low:
            raise UDPMError(f"config field {name} must be an integer >= {low}, got {value!r}")
    for name, (low, high, closed) in _FLOATS.items():
        value = getattr(config, name, None)
        if value is None:
            continue
        ok = _is_number(value) and math.isfinite(value) and value <= high
        ok = ok and (value >= low if closed else value > low)
        if not ok:
            bound = f"{'>=' if closed else '>'} {low:g}" + (
                f" and <= {high:g}" if high < 1e9 else ""
            )
            raise UDPMError(f"config field {name} must be a finite number {bound}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_device(name: str) -> torch.device:
    """:func:`udpm.device.resolve_device` (kept under this name for the run checks)."""
    from udpm.device import resolve_device

    return resolve_device(name)


def check_out(out: Path) -> None:
    """Refuse an output path that is a file, lies under a file, or cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UDPMError(f"--out {out} is a file, not a run directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UDPMError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UDPMError(f"--out {out}: {parent} is not writable (read-only or no permission)")


def os_error_line(exc: OSError, what: str) -> str:
    """A one-line message for an OS error while writing ``what``."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"disk full ({reason})"
    return f"cannot write {what}: {reason}" + (f" ({exc.filename})" if exc.filename else "")
