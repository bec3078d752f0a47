"""Deterministic kill points for the fault-injection tests.

The checkpoint writer calls :func:`point` at each phase of a write: ``partial`` (the
temporary file holds half its bytes, as if the process died while writing), ``written``
(complete but not yet renamed), ``renamed`` (in place; between the state and the model
file of a pair this is the moment in between) and ``pruning`` (between the two deletions
of an old pair). With ``UDPM_FAULT_AT=N`` in the environment the process dies with
``os._exit(FAULT_EXIT)`` at the Nth point it reaches, running no cleanup at all, like
``kill -9``. Without it every call is a no-op.
"""

from __future__ import annotations

import os

FAULT_EXIT = 86
_count = 0


def point(phase: str, tmp: str | None = None) -> None:
    """Count one phase; die here if it is the Nth of ``UDPM_FAULT_AT``."""
    global _count
    target = os.environ.get("UDPM_FAULT_AT")
    if not target:
        return
    _count += 1
    if _count != int(target):
        return
    if phase == "partial" and tmp is not None:
        os.truncate(tmp, os.path.getsize(tmp) // 2)
    os._exit(FAULT_EXIT)


def reset() -> None:
    """Start counting again (a forked child inherits its parent's count)."""
    global _count
    _count = 0
