"""How well a stage-1 autoencoder (latent diffusion's) reconstructs images: PSNR in dB."""

from __future__ import annotations

import torch


@torch.no_grad()
def reconstruction_psnr(autoencoder, images: torch.Tensor, batch_size: int = 256) -> dict:
    """Mean and median per-image PSNR of ``decode(mode of encode(x))`` over ``images``.

    Args:
        autoencoder: an ``AutoencoderKL`` (``udpm.load(AE_CKPT).network``).
        images: (N, C, H, W) in [-1, 1], ideally images it was not trained on.
        batch_size: images per forward pass.

    Returns:
        ``{"psnr_db": mean, "psnr_db_median": median, "n": N}``; reconstructions are
        clamped to [-1, 1] first, as a sampled image is.
    """
    from udpm.objectives.autoencoder import psnr

    device = next(autoencoder.parameters()).device
    autoencoder = autoencoder.eval()
    values = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        x_hat = autoencoder.decode(autoencoder.encode(x).mode()).clamp(-1, 1)
        values.append(psnr(x, x_hat).cpu())
    values = torch.cat(values)
    return {
        "psnr_db": values.mean().item(),
        "psnr_db_median": values.median().item(),
        "n": len(values),
    }
