"""Preemption: a stop signal saves a checkpoint at the next step boundary, then exits.

Clusters stop jobs with SIGTERM (and SLURM's ``--signal`` can send SIGUSR1 a while before
the time limit); users press Ctrl-C (SIGINT). While :class:`StopSignals` is active the
first of these only sets a flag; the loop checks it between steps, writes a checkpoint
of the current step and raises :class:`Preempted`, which the command line turns into
one line and exit status :data:`EXIT_PREEMPTED`. A second signal exits at once with
``128 + signal number``, like the default action: the last complete checkpoint is kept,
since checkpoints are written atomically.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import torch

from udpm.errors import UDPMError
from udpm.train import distributed as dist

# EX_TEMPFAIL of sysexits.h, "try again later": stopped on request, checkpoint saved.
EXIT_PREEMPTED = 75
SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name)
)


class Preempted(UDPMError):
    """Training stopped on a signal after saving its current step."""

    exit_status = EXIT_PREEMPTED


class StopSignals:
    """``with StopSignals() as stop:`` turns the stop signals into ``stop.requested``.

    Handlers can only be installed from the main thread; elsewhere this is a no-op and
    the signals keep their usual effect.
    """

    def __init__(self):
        self.signum, self._previous = None, {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: the user means now
            name = signal.Signals(signum).name
            print(
                f"udpm train: second stop signal ({name}): exiting at once; the last "
                "complete checkpoint is kept",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signum)
        self.signum = signum

    def requested(self) -> bool:
        """Whether any process got a stop signal; all ranks of a run agree on the answer."""
        local = self.signum is not None
        if not dist.is_distributed():
            return local
        return bool(dist.all_sum(torch.tensor([float(local)])).item() > 0)

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a stop signal"
