"""The open pages of one server: an :class:`Explorer` and a :class:`Worker` for each."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

from udpm.errors import UDPMError
from udpm.explore.session import DirectionCache, Explorer
from udpm.explore.worker import Worker


class UnknownSession(UDPMError):
    """A request names a page this server does not have (the web layer answers 404)."""


class Pages:
    """Open pages by session id; beyond ``limit`` the oldest is closed, so that forgotten
    tabs cannot hold threads for ever."""

    def __init__(self, model, cache: DirectionCache, limit: int = 8):
        self.model, self.cache, self.limit = model, cache, limit
        self._open: OrderedDict[str, tuple[Explorer, Worker]] = OrderedDict()
        self._lock = threading.Lock()

    def open(self) -> str:
        sid = secrets.token_urlsafe(12)
        with self._lock:
            self._open[sid] = (Explorer(self.model, self.cache), Worker(f"udpm-explore-{sid}"))
            stale = []
            while len(self._open) > self.limit:
                stale.append(self._open.popitem(last=False)[1][1])
        for worker in stale:
            worker.close(timeout=0)
        return sid

    def get(self, sid) -> tuple[Explorer, Worker]:
        with self._lock:
            if not isinstance(sid, str) or sid not in self._open:
                raise UnknownSession("unknown or expired session: reload the page")
            self._open.move_to_end(sid)
            return self._open[sid]

    def close(self) -> None:
        with self._lock:
            workers = [w for _, w in self._open.values()]
            self._open.clear()
        for worker in workers:
            worker.close()
