"""One page's thread of work: jobs run in order, and stale slider renders are dropped.

A slider sends its whole state with every event, so of several renders waiting in a row
only the newest matters: submitting one replaces a render that has not started yet, whose
caller gets :data:`SUPERSEDED`. Other jobs (select, swap, upload, ..) change the state and
are never dropped. Dragging therefore costs at most one render in progress plus one
waiting, however fast the events come.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

SUPERSEDED = object()  # the result of a render replaced by a newer one before it started


class Worker:
    """A daemon thread running submitted callables one at a time."""

    def __init__(self, name: str = "udpm-explore"):
        self._jobs: deque[tuple[Callable, Future, bool]] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, coalesce: bool = False) -> Future:
        """Queue ``fn()``; with ``coalesce``, replace a waiting coalescable job at the tail."""
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("worker is closed")
            if coalesce and self._jobs and self._jobs[-1][2]:
                _, stale, _ = self._jobs.pop()
                stale.set_result(SUPERSEDED)
            self._jobs.append((fn, future, coalesce))
            self._wake.notify()
        return future

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish the job in progress, supersede the waiting ones and stop the thread."""
        with self._wake:
            self._closed = True
            while self._jobs:
                self._jobs.popleft()[1].set_result(SUPERSEDED)
            self._wake.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if not self._jobs:
                    return
                fn, future, _ = self._jobs.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who turns it into a reply
                future.set_exception(exc)
