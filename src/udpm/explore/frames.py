"""What the page shows for one latent: the image and its per-level previews, as PNG bytes."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import torch
from PIL import Image

from udpm.data.save import to_uint8
from udpm.latent import Latent


@dataclass
class Frame:
    """One decoded latent.

    Attributes:
        latent: the latent it was decoded from.
        image: ``(C, H, W)`` in ``[-1, 1]``.
        previews: ``(L, C, H, W)``, ``[preview_L, .., preview_1]``: each level's prediction
            of ``H^{l-1} x_0`` mapped to full size (the last is the image itself).
    """

    latent: Latent
    image: torch.Tensor
    previews: torch.Tensor


@torch.inference_mode()  # a little faster than no_grad; the frames never meet autograd
def render(model, latent: Latent) -> Frame:
    """Decode ``latent`` with ``model.sample`` and keep the per-level previews."""
    latent.check(model, check_hash=False)
    images, levels = model.sample(
        noises=[e[None] for e in latent.noises],
        class_label=latent.class_label,
        return_levels=True,
    )
    return Frame(latent, images[0], levels[0].clamp(-1, 1))


def grid(model, start: int, n: int, class_label: int | None = None) -> torch.Tensor:
    """Images ``(n, C, H, W)`` for seeds ``start..start+n-1``, each the one that
    ``Latent.from_seed(model, s, class_label)`` decodes to."""
    return model.sample(n, seed=start, class_label=class_label)


def png_bytes(image: torch.Tensor) -> bytes:
    """A ``(C, H, W)`` image in ``[-1, 1]`` (C = 1 or 3) as PNG file bytes."""
    array = to_uint8(image).cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0], "L") if array.shape[-1] == 1 else Image.fromarray(array)
    out = io.BytesIO()
    pil.save(out, format="PNG")
    return out.getvalue()


def data_url(image: torch.Tensor) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
