"""VDM's ancestral sampler (Kingma et al. 2021, Appendix A.4; ``vdm.py``'s ``sample_step``).

On the grid ``t_k = k/T``, ``k = T..0``, each step from ``t`` to ``s = t - 1/T`` draws

    z_s = (α_s/α_t)(z_t - σ_t c ε̂(z_t, t)) + sqrt(σ_s² c) ε,     c = -expm1(γ_s - γ_t),

which is ``q(z_s | z_t, x = x̂)``. The chain ends at ``t = 0`` (where ``σ_0 > 0``), and the
image is the most likely 8-bit value under the decoder ``p(x | z_0)``. The latent of an
image is ``[z_1, ε_1, .., ε_T]`` (``T + 1`` maps), handed out by
:class:`udpm.noise.NoiseSource`; the signature is that of :mod:`udpm.samplers.gaussian`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from udpm.errors import UDPMError
from udpm.noise import NoiseSource
from udpm.objectives.denoiser import as_denoiser
from udpm.objectives.vdm import decode
from udpm.processes.vdm import alpha_sigma


@torch.no_grad()
def sample_vdm(
    denoiser,
    process,
    image_shape: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    noises: Sequence[torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    *,
    steps: int = 1000,
    eta: float | None = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    """``T = steps`` ancestral steps from ``z_1 ~ N(0, I)``, then decode; (N, C, H, W) in [-1, 1].

    Args:
        denoiser: a ε-predicting :class:`~udpm.objectives.denoiser.Denoiser` (or network).
        process: a bound :class:`udpm.processes.vdm.VDMProcess`.
        steps: ``T``, any positive number.
        eta, clip_x0: not used by VDM's sampler (accepted for the shared signature).
    """
    if eta is not None or clip_x0:
        raise UDPMError("VDM's ancestral sampler takes neither eta nor clip_x0")
    if int(steps) < 1:
        raise UDPMError(f"steps must be at least 1, got {steps}")
    T, denoiser = int(steps), as_denoiser(denoiser)
    device = denoiser.device if device is None else torch.device(device)
    source = NoiseSource(n, seed, noises, device)
    source.check_used(T + 1, exact=False, what=" (z_1 and one per step)")
    times = torch.arange(T, -1, -1, dtype=torch.float64) / T  # 1, .., 1/T, 0
    gamma = process.gamma(times).detach().cpu()
    alpha, sigma = alpha_sigma(gamma)
    if class_labels is not None:
        class_labels = class_labels.to(device)
    z = source.next(image_shape)
    for k in range(T):
        eps_hat = denoiser(process, z, times[k], class_labels).eps
        c = -torch.expm1(gamma[k + 1] - gamma[k]).item()
        scale = (alpha[k + 1] / alpha[k]).item()
        z = scale * (z - sigma[k].item() * c * eps_hat)
        z = z + (sigma[k + 1].item() ** 2 * c) ** 0.5 * source.next(image_shape)
        if callback is not None:
            callback(k + 1, T)
    return decode(z, gamma[-1].to(z.device)).to(z.dtype)
