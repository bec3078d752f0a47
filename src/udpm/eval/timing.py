"""Timing on any device: CUDA events on a GPU, warm-up, medians and spread, peak memory.

A CUDA kernel launch returns before the kernel ends, so wall-clock time around a call
measures the launches only; CUDA events recorded on the stream before and after it time
what the device did, gaps while it waited for the CPU included.
"""

from __future__ import annotations

import gc
import statistics
import time

import torch


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def elapsed(fn, device) -> float:
    """Seconds of one ``fn()``: CUDA events on a GPU (device time), perf_counter elsewhere."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000


@torch.no_grad()
def timed(fn, device, repeats: int, min_seconds: float) -> dict:
    """Warm-up (compilation, capture) once, then ``repeats`` runs or ``min_seconds``."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    warmup = time.perf_counter() - t0
    times = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < 10 * repeats):
        times.append(elapsed(fn, device))
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
        "warmup_s": warmup,
    }


def reset_memory(device) -> None:
    """Free cached blocks and restart the peak-memory counter (CUDA)."""
    if device.type == "cuda":
        gc.collect()  # drop unreachable tensors (captured graphs) before empty_cache
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device) -> float | None:
    """Peak CUDA memory allocated since :func:`reset_memory`, in MiB; None on a CPU."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
