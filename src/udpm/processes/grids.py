"""Sampling grids: which times a sampler visits, as pure functions of the schedule.

A sampler walks a descending grid of ``K`` times; each step goes from ``t`` to the next grid
time ``s`` and the last step lands on the data. ``s`` is always read off the grid itself,
never computed as ``t - T//K`` (the classic off-by-one of public DDIM code).
"""

from __future__ import annotations

import numpy as np

from udpm.errors import UDPMError

SPACINGS = ("leading", "trailing", "linspace")


def timestep_grid(
    num_timesteps: int, steps: int, spacing: str = "leading", offset: int = 0
) -> list[int]:
    """The descending respaced indices ``t_1 > .. > t_K`` in ``0..T-1`` (diffusers' rules).

    - ``"leading"``: ``k · (T // K) + offset`` for ``k = K-1..0``; diffusers' default
      ``timestep_spacing``, with ``offset`` its ``steps_offset`` (0 by default; 1 in Stable
      Diffusion). With ``offset = 0`` it is DDIM's original ``range(0, T, T // K)``: the
      grid ends at 0 but starts at ``(K-1)·(T//K)``, not ``T - 1``.
    - ``"trailing"``: ``round(T - k T/K) - 1`` for ``k = 0..K-1``: starts at ``T - 1``
      (better for few steps; Lin et al. 2024, Table 2).
    - ``"linspace"``: ``round(linspace(0, T - 1, K))``, reversed.
    """
    T, K = int(num_timesteps), int(steps)
    if not 1 <= K <= T:
        raise UDPMError(f"steps must be in 1..{T}, got {steps}")
    if spacing not in SPACINGS:
        raise UDPMError(f"unknown timestep spacing {spacing!r}; choose from {SPACINGS}")
    if offset and spacing != "leading":
        raise UDPMError("offset applies to the leading spacing only")
    if spacing == "leading":
        grid = (np.arange(0, K) * (T // K)).round()[::-1] + offset
    elif spacing == "trailing":
        grid = np.round(T - np.arange(K) * (T / K)) - 1
    else:
        grid = np.linspace(0, T - 1, K).round()[::-1]
    grid = [int(t) for t in grid]
    if grid[0] > T - 1 or grid[-1] < 0:
        raise UDPMError(f"offset {offset} puts the grid outside 0..{T - 1}")
    return grid


def time_grid(steps: int) -> list[float]:
    """``[1, 1 - 1/K, .., 1/K]``: ``K`` uniform steps from ``t = 1`` to the data at ``t = 0``."""
    if steps < 1:
        raise UDPMError(f"steps must be at least 1, got {steps}")
    return [1 - k / steps for k in range(steps)]
