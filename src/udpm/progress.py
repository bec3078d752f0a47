"""Progress over a count of units: a tqdm bar, or plain periodic lines for cluster logs.

Long commands report either way (``--no-progress`` turns the bar into lines, never into
silence). The ETA ignores the first ``skip`` units, which carry one-time costs (allocation,
kernel selection, caches) and would otherwise promise hours for a minute's work.
"""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """``0.8s``, ``42s``, ``2m09s``, ``1h05m``: short human units."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """``update()`` once per unit; ``mode`` is ``"bar"``, ``"lines"`` or ``"off"``.

    ``total`` may be set late (`set_total`), when the first unit reveals it. Lines go to
    ``stream`` (stdout) at the first unit, every ``every`` seconds, and once at the end.
    """

    def __init__(self, what, unit="step", total=None, mode="bar", every=10.0, skip=2,
                 stream=None):  # fmt: skip
        self.what, self.unit, self.total, self.mode = what, unit, total, mode
        # Lines are log output, not errors: stdout, so stderr keeps one-line errors alone.
        self.every, self.skip, self.stream = every, skip, stream or sys.stdout
        self.done, self.bar, self.postfix = 0, None, {}
        self.first = None  # `done` at the first update (a resumed run starts above 0)
        self.start = time.perf_counter()
        self.last_line = None  # lines: the first update prints at once, then every `every` s
        self.warm = None  # (time, done) once the first `skip` units are past

    def set_total(self, total: int) -> None:
        if self.total is None:
            self.total = total
            if self.bar is not None:
                self.bar.total = total

    def update(self, k: int = 1) -> None:
        if self.mode == "bar" and self.bar is None:
            from tqdm.auto import tqdm

            # tqdm's own ETA would average in the slow first steps: ours goes in the postfix.
            self.bar = tqdm(
                total=self.total, initial=self.done, desc=self.what, unit=self.unit,
                dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                "[{elapsed}{postfix}]",
            )  # fmt: skip
        if self.first is None:
            self.first = self.done
        self.done += k
        now = time.perf_counter()
        if self.warm is None and self.done - self.first >= self.skip:
            self.warm = (now, self.done)
        if self.bar is not None:
            eta = self.eta(now)
            extra = {"ETA": duration(eta)} if eta is not None else {}
            self.bar.set_postfix({**extra, **self.postfix}, refresh=False)
            self.bar.update(k)
        elif self.mode == "lines" and (
            self.last_line is None or now - self.last_line >= self.every
        ):
            self.last_line = now
            self._line(now)

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate since the first `skip` units, or None if unknown."""
        if self.warm is None or self.total is None or now <= self.warm[0]:
            return None
        rate = (self.done - self.warm[1]) / (now - self.warm[0])
        return (self.total - self.done) / rate if rate > 0 else None

    def _line(self, now: float) -> None:
        of = f"/{self.total}" if self.total else ""
        eta = self.eta(now)
        left = f", ETA {duration(eta)}" if eta is not None else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        print(f"{self.what}: {self.done}{of} {self.unit}s, {duration(now - self.start)} elapsed"
              f"{left}{extra}", file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.mode == "lines" and self.first is not None:
            elapsed = duration(time.perf_counter() - self.start)
            print(f"{self.what}: {self.done - self.first} {self.unit}s in {elapsed}",
                  file=self.stream, flush=True)  # fmt: skip


def mode_of(progress) -> str:
    """``True`` -> bar, ``"lines"`` -> lines, anything false -> off."""
    if progress in ("bar", "lines", "off"):
        return progress
    return "bar" if progress else "off"
