"""Sampling cost: network calls, FLOPs (counted by torch), wall time and sampler overhead.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, never from a hand formula;
they count everything a sample runs, latent diffusion's decoder included.
The UDPM cost claim (Abu-Hussein and Giryes 2024: 3 steps cost about 0.3 of one denoising
step) is the ratio between the FLOPs of one sample and of one pass of the same network at
full image resolution.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


class CallTimer(torch.nn.Module):
    """Wraps a network to count its calls and the wall time spent inside them."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network, self.calls, self.seconds = network, 0, 0.0

    def forward(self, *args, **kwargs):
        _sync(args[0].device)
        t0 = time.perf_counter()
        out = self.network(*args, **kwargs)
        _sync(out.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def __getattr__(self, name):
        """The wrapped network's other attributes; its ``decode`` (latent diffusion's decoder,
        run once per image) is timed as network time but is not a network call (NFE)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            attr = getattr(self.network, name)
        return self._timed(attr) if name == "decode" else attr

    def _timed(self, fn):
        def timed(*args, **kwargs):
            _sync(args[0].device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(out.device)
            self.seconds += time.perf_counter() - t0
            return out

        return timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _with_network(pipe, network):
    """A shallow copy of ``pipe`` whose sampler calls ``network``."""
    clone = object.__new__(type(pipe))
    clone.__dict__.update(pipe.__dict__)
    clone.network = network
    return clone


@torch.no_grad()
def sampling_flops(pipe, **sampler_kwargs) -> tuple[int, int]:
    """``(FLOPs per image, network calls per image)`` for one image."""
    timer = CallTimer(pipe.network)
    flops = count_flops(lambda: _with_network(pipe, timer).sample(1, seed=0, **sampler_kwargs))
    return flops, timer.calls


@torch.no_grad()
def full_resolution_pass_flops(pipe) -> int:
    """FLOPs of one pass of the same network on a full-resolution input (batch 1).

    A network that denoises something other than the image (latent diffusion's U-Net) names
    its input's channels in ``in_channels``; its pass then runs at the image's height and width.
    """
    channels, *size = pipe.image_shape
    channels = getattr(pipe.network, "in_channels", channels)
    x = torch.zeros(1, channels, *size, device=pipe.device)
    t = torch.full((1,), 0.5, device=pipe.device)
    labels = torch.zeros(1, dtype=torch.long, device=pipe.device) if pipe.num_classes else None
    # A generator with a latent input (DDGAN's G(x_t, z, t)) takes one z per image.
    z_dim = getattr(pipe.network, "z_dim", 0)
    z = {"z": torch.zeros(1, z_dim, device=pipe.device)} if z_dim else {}
    return count_flops(lambda: pipe.network(x, t, labels, **z))


@torch.no_grad()
def time_sampling(pipe, batch: int, repeats: int = 5, warmup: int = 1, **sampler_kwargs):
    """Per-image wall time (ms) over ``repeats`` runs after ``warmup``, and the overhead.

    The overhead is the share of the sampling time spent outside network calls: the
    posterior draws, noise generation and bookkeeping.
    """
    timer = CallTimer(pipe.network)
    timed = _with_network(pipe, timer)
    for _ in range(warmup):
        timed.sample(batch, seed=0, batch_size=batch, **sampler_kwargs)
    totals, overheads = [], []
    for r in range(repeats):
        timer.seconds = 0.0
        _sync(pipe.device)
        t0 = time.perf_counter()
        timed.sample(batch, seed=r, batch_size=batch, **sampler_kwargs)
        _sync(pipe.device)
        total = time.perf_counter() - t0
        totals.append(total)
        overheads.append((total - timer.seconds) / total)
    per_image = [1000 * t / batch for t in totals]
    return {
        "ms_per_image": statistics.median(per_image),
        "ms_per_image_min": min(per_image),
        "ms_per_image_max": max(per_image),
        "overhead_fraction": statistics.median(overheads),
        "repeats": repeats,
    }


def peak_memory_mb(pipe, batch: int, **sampler_kwargs) -> float | None:
    """Peak CUDA memory of sampling ``batch`` images; None on CPU (not measured there)."""
    if pipe.device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(pipe.device)
    with torch.no_grad():
        pipe.sample(batch, seed=0, batch_size=batch, **sampler_kwargs)
    return torch.cuda.max_memory_allocated(pipe.device) / 2**20


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def benchmark(
    pipe, repeats: int = 5, batches=(1, 64), accel: dict | None = None, **sampler_kwargs
) -> dict:
    """The fields of ``udpm bench --json``: ``nfe``, FLOPs and their ratio, ms per image per batch.

    ``sampler_overhead_fraction`` is that of batch 64 (else of the last batch timed); the
    README's "Measuring" section describes every field. ``accel``: options of
    ``Pipeline.accelerate`` for the timed runs (``compile``, ``channels_last``,
    ``autocast_dtype``); FLOPs are counted on the plain network, which does the same
    arithmetic.
    """
    from udpm.networks import count_parameters

    timed = pipe.accelerate(**(accel or {}))

    flops, nfe = sampling_flops(pipe, **sampler_kwargs)
    full = full_resolution_pass_flops(pipe)
    result = {
        "method": pipe.config.method,
        "image_shape": list(pipe.image_shape),
        "parameters": count_parameters(pipe.network),
        "nfe": nfe,
        "flops_per_image": flops,
        "flops_full_resolution_pass": full,
        "flops_ratio": flops / full,
        "device": str(pipe.device),
        "machine": machine(),
        "accel": {k: str(v) if isinstance(v, torch.dtype) else v for k, v in (accel or {}).items()},
    }
    for batch in batches:
        timing = time_sampling(timed, batch, repeats=repeats, **sampler_kwargs)
        result[f"ms_per_image_batch{batch}"] = timing["ms_per_image"]
        result[f"ms_per_image_batch{batch}_range"] = [
            timing["ms_per_image_min"],
            timing["ms_per_image_max"],
        ]
        result[f"sampler_overhead_fraction_batch{batch}"] = timing["overhead_fraction"]
        result[f"peak_memory_mb_batch{batch}"] = peak_memory_mb(timed, batch, **sampler_kwargs)
    result["sampler_overhead_fraction"] = result.get(
        "sampler_overhead_fraction_batch64", result[f"sampler_overhead_fraction_batch{batches[-1]}"]
    )
    result["repeats"] = repeats
    return result
