"""What every training method shares: optimisers, warm-up, clipping and the NaN guard."""

from __future__ import annotations

import torch

from udpm.errors import UDPMError


class NonFiniteLoss(UDPMError):
    """A loss became NaN or Inf; the caller keeps the last good checkpoint."""


class Method:
    """Base class. Subclasses fill ``self.modules`` (``"G"`` first) and implement ``step``.

    ``modules`` are the trainable networks, ``optimizers`` their Adam optimisers, keyed the
    same way. ``step`` takes one batch and returns a dict of floats for the logs.
    """

    def __init__(self, config, device, num_classes: int = 0, autocast_dtype=None):
        self.config, self.device, self.num_classes = config, torch.device(device), num_classes
        self.autocast_dtype = autocast_dtype
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def _make_optimizers(self) -> None:
        betas = tuple(self.config.adam_betas)
        self.optimizers = {
            k: torch.optim.Adam(m.parameters(), lr=self.config.lr, betas=betas)
            for k, m in self.modules.items()
        }

    def set_lr(self, step: int) -> None:
        """Linear warm-up over ``config.warmup`` steps, then constant."""
        scale = min(1.0, (step + 1) / max(self.config.warmup, 1))
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = self.config.lr * scale

    def autocast(self):
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled)

    def optimise(self, name: str, loss: torch.Tensor, what: str) -> float:
        """Backward, clip, step; refuse a non-finite loss before touching the weights."""
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLoss(f"{what} became {value}")
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.after_backward(name)
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.modules[name].parameters(), self.config.grad_clip)
        opt.step()
        return value

    def after_backward(self, name: str) -> None:
        """Hook for distributed gradient averaging (no-op on one process)."""

    def state_dict(self) -> dict:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    @property
    def generator(self) -> torch.nn.Module:
        return self.modules["G"]
