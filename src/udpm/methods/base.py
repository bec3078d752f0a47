"""What every training method shares: optimisers, warm-up, clipping and the NaN guard."""

from __future__ import annotations

import contextlib
import math

import torch

from udpm.errors import UDPMError


class NonFiniteLoss(UDPMError):
    """A loss became NaN or Inf; the caller keeps the last good checkpoint."""


class Method:
    """Base class. Subclasses fill ``self.modules`` (``"G"`` first) and implement ``step``.

    ``modules`` are the trainable networks, ``optimizers`` their Adam optimisers, keyed the
    same way. ``step`` takes this rank's part of a global batch and returns a dict of floats
    for the logs.
    """

    def __init__(self, config, device, num_classes: int = 0, autocast_dtype=None):
        self.config, self.device, self.num_classes = config, torch.device(device), num_classes
        self.autocast_dtype = autocast_dtype
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.nets: dict[str, torch.nn.Module] = {}
        self.split = None  # set by distribute(); None: the batch given to step is all there is

    def _make_optimizers(self, lrs: dict[str, float] | None = None) -> None:
        """Adam (AdamW with weight decay) per module, with the method's own settings.

        Each optimiser holds the module's parameters that require grad (latent diffusion's
        frozen autoencoder is part of its generator and must not be in it).

        ``lrs`` gives a module its own base learning rate (DDGAN's G and D differ).
        """
        optim = self.config.optim
        self.base_lrs = {k: (lrs or {}).get(k, optim.lr) for k in self.modules}
        kind = torch.optim.AdamW if optim.weight_decay else torch.optim.Adam
        self.optimizers = {
            k: kind(
                [p for p in m.parameters() if p.requires_grad],  # not a frozen part's
                lr=self.base_lrs[k],
                betas=tuple(optim.betas),
                weight_decay=optim.weight_decay,
            )
            for k, m in self.modules.items()
        }

    def lr_scale(self, step: int) -> float:
        """Linear warm-up over ``optim.warmup`` steps, then constant or cosine decay to 0."""
        optim = self.config.optim
        scale = min(1.0, (step + 1) / max(optim.warmup, 1))
        if optim.decay == "cosine":
            scale *= 0.5 * (1 + math.cos(math.pi * min(step / max(self.config.steps, 1), 1.0)))
        return scale

    def current_lr(self) -> float:
        """The learning rate the last step used: the first optimiser's (G's, if several)."""
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    def set_lr(self, step: int) -> None:
        scale = self.lr_scale(step)
        for k, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lrs[k] * scale

    def autocast(self):
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled)

    def distribute(self, split) -> None:
        """Train on this rank's part of each global batch (a ``train.distributed.BatchSplit``).

        Under several processes each network is wrapped in ``DistributedDataParallel``,
        which averages gradients over the ranks during ``backward``. ``modules`` keep the
        plain networks (optimisers, EMA and checkpoints use them); ``nets`` the wrapped ones
        for the training forward passes. D's R1 penalty differentiates with respect to the
        input only (``autograd.grad``, which fires no DDP hook), and the one ``backward`` of
        D's loss then reduces each weight's gradient once, its double-backward part
        included; ``tests/test_distributed.py`` checks the result against one process.
        """
        self.split = split
        if split.world_size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.nets = {k: DDP(m, device_ids=ids) for k, m in self.modules.items()}

    def net(self, name: str) -> torch.nn.Module:
        """The network to train through: DDP-wrapped under several processes."""
        return self.nets.get(name, self.modules[name])

    @property
    def accum_steps(self) -> int:
        return 1 if self.split is None else self.split.accum_steps

    def rank_rows(self, draw, local_size: int) -> torch.Tensor:
        """This rank's rows of ``draw(global batch size)``, moved to the device.

        Every rank draws the noise of the whole global batch from a generator seeded alike
        and keeps its rows, so a sample's noise does not depend on how the batch is split
        over processes and micro-batches: a run on W processes sees the noise of one.
        ``local_size`` is the batch given to ``step`` (all of it without ``distribute``).
        """
        if self.split is None:
            return draw(local_size).to(self.device)
        return self.split.rank_part(draw(self.split.batch_size)).to(self.device)

    def micro_batches(self, *xs) -> list[tuple]:
        return [xs] if self.split is None else self.split.micro_parts(*xs)

    def optimise(self, name: str, micro_loss, what: str) -> dict[str, float]:
        """One optimiser step of ``modules[name]`` on the step's global batch.

        ``micro_loss(i)`` returns the loss of micro-batch ``i`` (a mean over its samples)
        and a dict of scalar terms to log. Gradients of ``loss / A`` accumulate over the
        ``A`` micro-batches, and DDP averages them over the ranks on the last one (so
        ``micro_loss`` runs inside the no-sync context that DDP reads in its forward): the
        step follows the mean loss over the global batch. Returns the global means of
        ``"loss"`` and of each term, the same on every rank; a non-finite mean on any rank
        stops every rank before the weights change.
        """
        opt, steps = self.optimizers[name], self.accum_steps
        opt.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for i in range(steps):
            with self._sync(name, i == steps - 1):
                loss, terms = micro_loss(i)
                (loss / steps).backward()
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
        means = self._global_means(sums)
        if not math.isfinite(means["loss"]):
            raise NonFiniteLoss(f"{what} became {means['loss']}")
        if self.config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                self.modules[name].parameters(), self.config.optim.grad_clip
            )
        opt.step()
        return means

    def _sync(self, name: str, last: bool):
        # Only DDP has no_sync (a compiled net forwards it to the DDP it wraps, if any).
        no_sync = getattr(self.net(name), "no_sync", None)
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def _global_means(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """Means over micro-batches and ranks, in one collective for all the terms."""
        from udpm.train.distributed import all_sum

        world = 1 if self.split is None else self.split.world_size
        total = all_sum(torch.stack(list(sums.values())))
        values = (total / (self.accum_steps * world)).tolist()
        return dict(zip(sums, values))

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

    def diagnostics(self, images: torch.Tensor, data_uint8: torch.Tensor) -> dict:
        """Method-specific numbers logged with each sample grid (e.g. UDPM's diversity)."""
        return {}

    #: The method's ``torch.Generator`` attributes, saved with each checkpoint so that a
    #: resumed run draws the noise an uninterrupted one would.
    random_streams: tuple[str, ...] = ("noise_gen",)

    def extra_state(self) -> dict:
        streams = [k for k in self.random_streams if hasattr(self, k)]
        return {k: getattr(self, k).get_state() for k in streams}

    def load_extra_state(self, state: dict) -> None:
        for k, value in (state or {}).items():
            if k in self.random_streams:
                getattr(self, k).set_state(value)

    @property
    def generator(self) -> torch.nn.Module:
        return self.modules["G"]

    @property
    def spec(self):
        from udpm.methods.registry import get_spec

        return get_spec(self.config.method)

    def sample(self, network, seeds, labels) -> torch.Tensor:
        """Training-time sample grids: the spec's sampler with its cheap preview options."""
        from udpm.pipeline import Pipeline

        spec = self.spec
        pipe = Pipeline(network, self.process, self.config, {"num_classes": self.num_classes})
        options = spec.options(spec.preview_options, self.config)
        return spec.sample(pipe, seeds, None, labels, options).images
