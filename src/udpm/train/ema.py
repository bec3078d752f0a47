"""Exponential moving average of the generator's weights."""

from __future__ import annotations

import copy

import torch


class EMA:
    """``θ_ema ← d θ_ema + (1 - d) θ`` with ``d = min(decay, (1 + step)/(10 + step))``.

    The warm-up of ``d`` (as in TF's ExponentialMovingAverage with num_updates) keeps a
    short CPU run from averaging in its random initialisation for thousands of steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
