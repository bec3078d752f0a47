"""What training says while it runs: a start line, progress with a fair ETA, grid times.

With a terminal it is a bar; with ``--no-progress`` (cluster logs) the same facts come as
plain lines every ``every`` seconds and at the first step, so a log is never silent for
long. The ETA is measured after the first steps (`udpm.progress.Progress`), which carry
the one-time costs: the first step of a CPU run can take 8 s and later ones 0.5 s.
"""

from __future__ import annotations

import time

from udpm.progress import Progress, duration

SHOWN = ("loss_g", "loss_d", "l1", "img_per_s", "lr")


class TrainReport:
    """The progress of one run on rank 0 (``enabled`` False elsewhere: silent)."""

    def __init__(
        self, cfg, step: int, progress: bool, enabled: bool, every: float = 30.0, last=None
    ):
        """``last``: the step this invocation stops at (default: the planned ``cfg.steps``)."""
        self.enabled = enabled
        mode = ("bar" if progress else "lines") if enabled else "off"
        last = cfg.steps if last is None else last
        self.progress = Progress(f"train {cfg.method}", "step", last, mode, every, skip=3)
        self.progress.done = step  # a resumed run starts where it stopped
        self.start = time.perf_counter()

    def say(self, line: str) -> None:
        """A line that does not break the bar."""
        if not self.enabled:
            return
        if self.progress.bar is not None:
            self.progress.bar.write(line)
        else:
            print(line, flush=True)

    def started(self, cfg, trainer) -> None:
        n, (c, h, w) = len(trainer.data.images), trainer.data.images.shape[1:]
        begin = f"from step {trainer.step}" if trainer.step else "from scratch"
        last = trainer.last_step
        target = f"{cfg.steps}" if last == cfg.steps else f"{last} of {cfg.steps}"
        self.say(
            f"training {cfg.method} {begin} to step {target} on {trainer.device}: "
            f"{n} images {w}x{h}x{c}, batch {cfg.batch_size}, lr {cfg.optim.lr:g}; a line "
            f"every {cfg.log_every} steps in metrics.jsonl, a grid every {cfg.sample_every}, "
            f"a checkpoint every {cfg.checkpoint_every}"
        )

    def stepped(self, record: dict | None) -> None:
        if record is not None:
            shown = {k: f"{v:.3g}" for k, v in record.items() if k in SHOWN}
            # The newest grid's collapse ratios stay in view between grids (1 = the data's).
            self.progress.postfix = {**shown, **getattr(self, "diversity", {})}
        self.progress.update()

    def grid_started(self, path) -> None:
        """Before a grid: named when grids are slow (DDPM's 1000 steps), so none is silent."""
        if getattr(self, "slow_grids", True):
            self.say(f"drawing sample grid {path.name} (64 images, EMA weights) ...")
        if self.progress.bar is not None:
            self.progress.bar.set_postfix_str("drawing the sample grid")

    def grid(self, path, seconds: float, stats: dict | None = None) -> None:
        self.slow_grids = seconds >= 5
        names = {"top_std_ratio": "top_std", "nn_ratio": "nn"}
        self.diversity = {names[k]: f"{v:.2f}" for k, v in (stats or {}).items() if k in names}
        if seconds >= 1:
            self.say(f"sample grid {path.name}: 64 images in {duration(seconds)}")

    def close(self) -> None:
        self.progress.close()
