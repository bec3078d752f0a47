"""The run's metrics log: ``metrics.jsonl`` always, TensorBoard too when it is installed."""

from __future__ import annotations

import json
from pathlib import Path


class Logger:
    """``metrics.jsonl`` always; TensorBoard too when it is installed."""

    def __init__(self, out: Path, enabled: bool = True):
        self.file = open(out / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # tensorboard is an optional extra
                self.tb = None

    def log(self, record: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["step"])

    def images(self, tag: str, images, step: int) -> None:
        """A sample grid (N, C, H, W) in [-1, 1] for TensorBoard's image tab, when installed."""
        if self.tb is not None:
            self.tb.add_images(tag, ((images + 1) / 2).clamp(0, 1), step)  # tiled by TensorBoard

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
