"""UDPM training objectives (Abu-Hussein and Giryes 2024, Sec. 3.3 and Algorithm 1).

At level ``l`` the generator sees ``x_l ~ q(x_l | x_0)`` and predicts ``y = H^{l-1} x_0``.
Prediction and target are divided by ``sum(w)^{l-1}`` so both lie in ``[-1, 1]`` whatever
the level; every term below works on those normalised images.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

# The adversarial terms live in objectives/adversarial.py, shared with DDGAN; re-exported
# here so that existing imports keep working.
from udpm.objectives.adversarial import (  # noqa: F401
    discriminator_loss,
    generator_adversarial,
    instance_noise_std,
    r1_penalty,
)
from udpm.processes.upsampling import UpsamplingProcess


def level_targets(process: UpsamplingProcess, x0: torch.Tensor, l: int, noise: torch.Tensor):
    """``(x_l, y / sum(w)^{l-1}, sum(w)^{l-1})`` for one training batch at level ``l``."""
    x_l = process.q_sample(x0, l, noise=noise)
    scale = process.operator.sum ** (l - 1)
    return x_l, process.degrade(x0, l - 1) / scale, scale


def feature_matching(features_fake: list, features_real: list) -> torch.Tensor:
    """Paired feature matching (Wang et al. 2018, pix2pixHD, Eq. 4): the mean over D's
    blocks of ``mean |D_i(ŷ) - D_i(y)|``, with ``D_i(y)`` held fixed.

    A perceptual distance that needs no pretrained weights: the features are the
    discriminator's own, trained on this data (never on the evaluation network's).
    """
    terms = [(f - r.detach()).abs().mean() for f, r in zip(features_fake, features_real)]
    return torch.stack(terms).mean()


def mode_seeking(
    y_hat: torch.Tensor, x_l: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Mode-seeking term (Mao et al. 2019, MSGAN, Eq. 3), to be minimised by G.

    The batch's first half is paired with its second: ``r = mean|ŷ_a - ŷ_b| / mean|x_a - x_b|``
    and the term is ``1 / (r + eps)``, as in the authors' code. G pays when two different
    inputs give alike outputs, the signature of mode collapse. At UDPM's top level the
    input ``x_L`` is almost pure noise, so it plays the role of the GAN's latent ``z``.

    Bounded form (not in the paper), when the targets ``y`` are given: the output gap counts
    only up to the targets' own gap ``mean|y_a - y_b|``, so G gains nothing by spreading its
    outputs further apart than the data's. The plain term keeps rewarding that without limit,
    and at weight 1 it overshot from one training seed of ``benchmarks/top_level.py``.
    """
    half = y_hat.shape[0] // 2
    if half == 0:
        return y_hat.new_zeros(())

    def gap(t: torch.Tensor) -> torch.Tensor:  # mean distance between the paired halves
        return (t[:half] - t[half : 2 * half]).abs().mean()

    out_gap = gap(y_hat) if y is None else torch.minimum(gap(y_hat), gap(y).detach())
    return 1.0 / (out_gap / gap(x_l).clamp_min(eps) + eps)


class Perceptual:
    """LPIPS(VGG) when its package and weights are present; otherwise a clear one-time notice.

    ``lpips`` downloads VGG weights through torchvision; on a machine without them this
    term is dropped (the caller sees ``available == False``), never a silent failure.
    """

    def __init__(self, kind: str = "lpips", device="cpu", warn: Callable = warnings.warn):
        self.model, self.reason = None, None
        if kind == "none":
            self.reason = "disabled in the config (perceptual: none)"
            return
        try:
            import lpips  # optional extra: pip install 'udpm[lpips]'

            self.model = lpips.LPIPS(net="vgg", verbose=False).to(device).eval()
            self.model.requires_grad_(False)
        except Exception as exc:  # ImportError, or no weights and no network
            self.reason = f"LPIPS unavailable ({type(exc).__name__}: {str(exc)[:120]})"
            warn(f"{self.reason}; training without the perceptual term", stacklevel=2)

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            return y_hat.new_zeros(())
        if y.shape[-1] < 32:  # VGG's pooling needs some room; compare upsampled copies
            size = (32, 32)
            y_hat = F.interpolate(y_hat, size=size, mode="nearest")
            y = F.interpolate(y, size=size, mode="nearest")
        if y.shape[1] == 1:
            y_hat, y = y_hat.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return self.model(y_hat.float(), y.float()).mean()
