"""Many processes: torchrun's environment, the process group, and the few collectives we use.

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins the
processes with NCCL on GPUs and gloo on CPUs. In one process everything here is a no-op,
so the library code calls it unconditionally.

A global batch of ``N`` samples is split by :class:`BatchSplit`: rank ``r`` of ``W`` takes
samples ``r, r + W, r + 2W, ...`` and cuts them into micro-batches the same strided way.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from udpm.errors import UDPMError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Context:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we started the process group, so we end it


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_from_env(device: str = "auto") -> Context:
    """Join the process group that torchrun describes; one process without it.

    Args:
        device: the config's device (``auto | cpu | cuda | cuda:N``); a CUDA device selects
            NCCL and this process's GPU ``LOCAL_RANK``, anything else gloo.
    """
    if dist.is_available() and dist.is_initialized():  # the caller set it up already
        return Context(dist.get_rank(), dist.get_world_size(), _local_rank(), owns_group=False)
    world_size = env_world_size()
    if world_size <= 1:
        return Context()
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise UDPMError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; run under torchrun, "
            "e.g. torchrun --nproc_per_node=N -m udpm.cli train ..."
        )
    local_rank = _local_rank()
    if wants_cuda(device):
        if local_rank >= torch.cuda.device_count():
            raise UDPMError(
                f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                "use --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if wants_cuda(device) else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def cleanup(context: Context) -> None:
    """End the process group we started, and free it while the interpreter is alive.

    ``destroy_process_group`` only drops torch's own references; a DDP module caught in a
    reference cycle keeps the gloo group alive until interpreter shutdown, where tearing
    down its threads aborts the process now and then ("terminate called without an
    active exception", about 1 launch in 15 here). Collecting the cycles first avoids it.
    """
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


@contextmanager
def process_group(device: str = "auto"):
    """``with process_group(device) as ctx:`` joins torchrun's group and leaves it after."""
    context = init_from_env(device)
    try:
        yield context
    finally:
        cleanup(context)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_device(device: torch.device) -> torch.device:
    """Under several processes ``cuda`` means this process's GPU, ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", _local_rank())
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# --- collectives ---------------------------------------------------------------------


def _comm_device() -> torch.device:
    """Tensors for NCCL must live on this process's GPU; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks (``x`` itself in one process)."""
    if not is_distributed():
        return x
    y = x.to(_comm_device()).clone()
    dist.all_reduce(y)
    return y.to(x.device)


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_tensor(x: torch.Tensor) -> torch.Tensor:
    """The ranks' tensors concatenated along dim 0, in rank order; sizes may differ.

    Returns a tensor on ``x``'s device; every rank receives the whole result.
    """
    if not is_distributed():
        return x
    device = _comm_device()
    sizes = all_gather_object(int(x.shape[0]))
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=device)
    padded[: x.shape[0]] = x.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(x.device)


def shard_range(n: int) -> range:
    """This rank's contiguous block of ``range(n)``; blocks differ in size by one at most."""
    r, w = rank(), world_size()
    return range(r * n // w, (r + 1) * n // w)


def together(fn: Callable, main_only: bool = False, share: bool = False):
    """Run ``fn`` (on rank 0 only if ``main_only``) and fail on every rank if it fails on one.

    A rank that raised alone would leave the others waiting at the next collective for
    ever; here every rank raises, the failing one its own exception and the others a
    one-line :class:`UDPMError` naming it. ``share`` returns rank 0's result everywhere.
    """
    if not is_distributed():
        return fn()
    result, error, failure = None, None, None
    if not main_only or dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as exc:  # re-raised below, after the others heard of it
            failure = exc
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    errors = all_gather_object(error)
    if failure is not None:
        raise failure
    bad = [(r, e) for r, e in enumerate(errors) if e is not None]
    if bad:
        r, e = bad[0]
        raise UDPMError(f"rank {r} failed: {e}")
    return broadcast_object(result) if share else result


def check_same(values: dict, what: str = "config") -> None:
    """Raise on every rank unless all ranks hold the same ``values`` (a JSON-able dict).

    Ranks compare a hash first; on a mismatch they exchange the dicts to name the first
    differing field and the ranks that differ from rank 0.
    """
    if not is_distributed():
        return
    text = json.dumps(values, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    digests = all_gather_object(digest)
    if len(set(digests)) == 1:
        return
    dicts = [_flatten(d) for d in all_gather_object(values)]
    ranks = [r for r, d in enumerate(digests) if d != digests[0]]
    theirs = dicts[ranks[0]]
    keys = sorted(set(dicts[0]) | set(theirs))
    field = next((k for k in keys if _text(dicts[0], k) != _text(theirs, k)), keys[0])
    raise UDPMError(
        f"ranks disagree on the {what}: rank(s) {', '.join(map(str, ranks))} differ from "
        f"rank 0, first in {field} ({_short(theirs, field)} vs {_short(dicts[0], field)}); "
        "start every rank with the same command, data and udpm version"
    )


def _flatten(values: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, so a mismatch names the innermost field."""
    flat = {}
    for k, v in values.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _text(values: dict, key: str) -> str:
    return json.dumps(values.get(key), default=str)


def _short(values: dict, key: str) -> str:
    text = _text(values, key)
    return text if len(text) <= 40 else text[:37] + "..."


# --- how a global batch is split -------------------------------------------------------


@dataclass(frozen=True)
class BatchSplit:
    """A global batch over ``world_size`` ranks and micro-batches of ``micro_batch``.

    Rank ``r`` takes samples ``r, r + W, ...`` of the global batch and its micro-batch
    ``a`` every ``A``-th of those from ``a``, so micro-batch ``a`` of rank ``r`` holds the
    global samples ``r + W a, r + W a + W A, ...``. Strided rather than contiguous parts
    keep the discriminator's minibatch-std groups (samples ``i, i + N/4, ...``, see
    ``networks.discriminator.minibatch_std``) what one process forms from the whole batch,
    whenever the micro-batch is a multiple of the group size 4.
    """

    batch_size: int  # N, the global batch
    world_size: int = 1  # W, processes
    rank: int = 0
    micro_batch: int | None = None  # per-device micro-batch; None = N / W (no accumulation)

    def __post_init__(self):
        n, w, m = self.batch_size, self.world_size, self.micro_batch
        if m is not None and (m < 1 or n % (w * m)):
            raise UDPMError(
                f"batch size {n} is not divisible by world size {w} × micro-batch {m}; "
                "the global batch must be processes × micro-batch × accumulation steps"
            )
        if n % w:
            raise UDPMError(
                f"batch size {n} is not divisible by world size {w}; "
                "the global batch must be a multiple of the number of processes"
            )

    @property
    def per_rank(self) -> int:
        return self.batch_size // self.world_size

    @property
    def accum_steps(self) -> int:
        """A, the micro-batches per rank and step (gradient accumulation)."""
        return self.per_rank // (self.micro_batch or self.per_rank)

    def rank_part(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """This rank's rows of a global-batch tensor."""
        if x is None or self.world_size == 1:
            return x
        return x[self.rank :: self.world_size]

    def micro_parts(self, *xs: torch.Tensor | None) -> list[tuple]:
        """This rank's tensors cut into ``A`` micro-batches, one tuple per micro-batch."""
        a = self.accum_steps
        if a == 1:
            return [xs]
        return [tuple(None if x is None else x[i::a] for x in xs) for i in range(a)]
