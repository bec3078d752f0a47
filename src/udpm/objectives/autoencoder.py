"""Latent diffusion's first stage (Rombach et al. 2022, Sec. 3.1 and Appendix G): a KL autoencoder.

The encoder gives a diagonal Gaussian ``q(z | x) = N(μ, diag(exp(logvar)))`` per image; the
loss is CompVis' ``LPIPSWithDiscriminator`` (``ldm/modules/losses/contperceptual.py``):

    L = Σ_pixels (|x - x̂| + w_p LPIPS(x, x̂)) / N + w_kl Σ_latent KL(q(z|x) || N(0, I)) / N
        + λ_adv · w_d · (-D(x̂))

with per-image sums (not means) over pixels and latent entries, divided by the batch size
``N`` as CompVis do, a small ``w_kl`` (1e-6), and the hinge GAN of a patch discriminator
``D`` switched on after ``disc_start`` steps, its weight ``λ_adv`` balanced adaptively
(Esser et al. 2021, eq. 7): ``λ_adv = ||∇_last L_rec|| / (||∇_last L_G|| + 1e-4)`` at the
decoder's last layer. CompVis also learn a scalar ``logvar`` dividing the reconstruction
term; it is fixed at 0 here (their initial value), which keeps the loss a plain sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# CompVis' DiagonalGaussianDistribution clamps the log-variance to this range.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


@dataclass(frozen=True)
class DiagonalGaussian:
    """``N(mean, diag(exp(logvar)))`` per image; both fields (N, C, h, w).

    Build it with :meth:`from_moments`, which clamps the log-variance as CompVis do.
    """

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> DiagonalGaussian:
        """Split (N, 2C, h, w) encoder moments into mean and clamped log-variance."""
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return cls(mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``z = μ + σ ε``; deterministic given ``noise = ε ~ N(0, I)`` (shape of ``mean``)."""
        noise = torch.randn_like(self.mean) if noise is None else noise.to(self.mean)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """``KL(q || N(0, I))`` summed over each image's entries: (N,).

        ``½ Σ (μ² + σ² - 1 - log σ²)``, the closed form of Kingma and Welling (2014), App. B.
        """
        terms = self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(1)


def per_image_sum(x: torch.Tensor) -> torch.Tensor:
    """``Σ`` over everything but the batch, then the mean over the batch (CompVis' reduction)."""
    return x.flatten(1).sum(1).mean()


def reconstruction_loss(x, x_hat, perceptual=None, perceptual_weight: float = 1.0):
    """``Σ_pixels (|x - x̂| + w_p LPIPS(x, x̂)) / N``.

    CompVis broadcast each image's LPIPS over its pixels, so that term's per-image sum is
    ``C·H·W`` times the LPIPS; ``perceptual(x_hat, x)`` gives the batch mean LPIPS (a 0-d
    tensor, :class:`udpm.objectives.udpm.Perceptual`), or is None.
    """
    loss = per_image_sum((x - x_hat).abs())
    if perceptual is not None and perceptual_weight > 0:
        loss = loss + perceptual_weight * x[0].numel() * perceptual(x_hat, x)
    return loss


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``½ (E relu(1 - D(x)) + E relu(1 + D(x̂)))``, CompVis' discriminator loss."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss, g_loss, last_layer: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale · ||∇ L_rec|| / (||∇ L_G|| + 1e-4)`` at ``last_layer``, clamped to [0, 1e4].

    Esser et al. (2021), eq. 7, as in CompVis' ``calculate_adaptive_weight``; detached.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return (weight.clamp(0.0, 1e4) * scale).detach()


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, for images in [-1, 1] (peak-to-peak 2).

    ``10 log10(2² / MSE)``; (N, C, H, W) -> (N,).
    """
    mse = (x.float() - x_hat.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))
