"""Adversarial terms shared by UDPM and DDGAN: non-saturating losses, R1, instance noise.

Both methods train a discriminator ``D`` against a generator with Goodfellow et al.'s
non-saturating loss written with softplus (``-log sigmoid(x) = softplus(-x)``), and
regularise ``D`` with R1 on real inputs (Mescheder et al. 2018, "Which training methods
for GANs do actually converge?").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generator_adversarial(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``softplus(-D(ŷ))``."""
    return F.softplus(-logits_fake).mean()


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``softplus(-D(y)) + softplus(D(ŷ))``, the non-saturating GAN loss for D.

    At zero logits (a D that cannot tell) it is ``2 ln 2``.
    """
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``E ||∇_y D(y)||²`` on real inputs (Mescheder et al. 2018); ``real`` needs grad.

    The gradient is taken with respect to ``real`` alone: any other input of D (DDGAN's
    conditioning ``x_t``) is held fixed.
    """
    (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def lazy_r1_due(step: int, every: int) -> bool:
    """Lazy regularisation (Karras et al. 2020, StyleGAN2): R1 on steps ``0, k, 2k, ..``.

    ``every <= 1`` means every step. NVlabs' DDGAN fires on ``global_step % k == 0``, from 0.
    """
    return every <= 1 or step % every == 0


def instance_noise_std(
    step: int, start: float, decay: float, every: int, end: float | None = None, steps: int = 1
) -> float:
    """Instance noise for D's inputs: ``start · decay^(step // every)``.

    With ``end``, instead ``start · (end/start)^(step/steps)``: geometric from ``start`` at
    step 0 to ``end`` at the run's last step, whatever its length.
    """
    if end is not None:
        return start * (end / start) ** min(step / max(steps, 1), 1.0)
    return start * decay ** (step // max(every, 1))
