"""VDM's generator: the ε-network on ``z_t`` and its Fourier features, plus the schedule ``γ``.

Kingma et al. 2021, Sec. 3.4 and Appendix B: the network sees ``z_t`` concatenated with
``sin(2^n 2π z_t)`` and ``cos(2^n 2π z_t)`` for ``n`` in ``exponents`` (6 and 7 in their
code's ``Base2FourierFeatures(start=6, stop=8)``), which makes the fine detail that decides
the likelihood of 8-bit data visible to it, and is conditioned on the normalised ``γ_t``.
One module owns both the U-Net and the schedule, so a model file (one ``state_dict``) and
the EMA carry the learned ``γ`` with the denoiser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from udpm.networks.schedule import NoiseSchedule


def fourier_features(z: torch.Tensor, exponents: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2·len(exponents)·C, H, W): all sines, then all cosines.

    Computed in float32 at least: ``2^7 · 2π · z`` needs the precision that bf16 lacks.
    """
    if not exponents:
        return z[:, :0]
    w = torch.tensor([2.0**n * 2 * math.pi for n in exponents], device=z.device)
    h = (z.float()[:, None] * w.view(1, -1, 1, 1, 1)).flatten(1, 2)  # (N, K·C, H, W)
    return torch.cat([h.sin(), h.cos()], dim=1).to(z.dtype)


class VDMNetwork(nn.Module):
    """``ε̂(z_t, γ_t)`` with the schedule ``γ`` as a submodule.

    Args:
        unet: the ε-network; its input has ``(1 + 2·len(exponents))·C`` channels.
        schedule: the noise schedule γ (:class:`udpm.networks.schedule.NoiseSchedule`).
        exponents: the base-2 exponents ``n`` of the Fourier features.
    """

    def __init__(self, unet: nn.Module, schedule: NoiseSchedule, exponents: Sequence[int] = (6, 7)):
        super().__init__()
        self.unet, self.schedule = unet, schedule
        self.exponents = tuple(int(n) for n in exponents)

    def forward(self, z: torch.Tensor, time: torch.Tensor, class_labels=None) -> torch.Tensor:
        """z: (N, C, H, W); time: (N,) normalised ``γ_t``. Returns ε̂: (N, C, H, W)."""
        h = torch.cat([z, fourier_features(z, self.exponents)], dim=1)
        return self.unet(h, time, class_labels)
