"""Standard FID with Inception-v3 (optional: needs ``pip install 'udpm[fid]'`` and weights).

This is the number papers report, computed by torchmetrics' ``FrechetInceptionDistance``
on the 2048-d pool3 features of the TF-ported Inception-v3 that torch-fidelity provides.
Nothing is downloaded: the weights must already be in torch's hub cache
(``<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth``) or be given
with ``inception_weights=PATH`` (``--inception-weights PATH`` on the command line).

The resize to 299×299 changes FID by whole points, so it is pinned and reported: by default
the TF1-compatible bilinear resize of the original FID code (``"tf1-bilinear"``), which is
what published numbers used; torchmetrics >= 1.8 defaults to an antialiased resize instead
(``antialias=True`` here, ``"bilinear-antialias"``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from udpm.errors import UDPMError
from udpm.images import to_uint8  # rounded as when saved to PNG, which is what FID expects

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
NETWORK_ID = "inception-v3-2048"
MISSING_EXTRA = (
    "FID needs the optional extra: pip install 'udpm[fid]' (torch-fidelity) and Inception "
    "weights (--inception-weights PATH)"
)


def fidelity_available() -> bool:
    """Whether torch-fidelity, which provides the Inception-v3 network, is importable."""
    return importlib.util.find_spec("torch_fidelity") is not None


def resize_mode(antialias: bool) -> str:
    return "bilinear-antialias" if antialias else "tf1-bilinear"


def find_inception_weights(inception_weights: str | os.PathLike | None = None) -> Path:
    """The weights file to use: the given path, else torch's hub cache. Never downloads."""
    if inception_weights is not None:
        path = Path(inception_weights).expanduser()
        if not path.is_file():
            raise UDPMError(f"Inception weights not found: {path}")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    if not cached.is_file():
        raise UDPMError(
            f"FID needs Inception weights: none at {cached}; download {WEIGHTS_URL} and pass "
            "--inception-weights PATH"
        )
    return cached


class InceptionFID:
    """torchmetrics FID on Inception-v3 pool3 features with a pinned resize.

    Args:
        inception_weights: path of the torch-fidelity Inception-v3 weights; None looks in
            torch's hub cache.
        antialias: False (default) resizes like the original TF FID code, True uses
            torchmetrics' antialiased bilinear resize.
        device: where Inception runs.

    Raises:
        UDPMError: the extra is not installed, or no weights are found, or they do not load.
    """

    def __init__(self, inception_weights=None, antialias: bool = False, device=None):
        if not fidelity_available():
            raise UDPMError(MISSING_EXTRA)
        weights = find_inception_weights(inception_weights)
        from torchmetrics.image.fid import FrechetInceptionDistance

        try:
            self.metric = FrechetInceptionDistance(
                feature=2048,
                normalize=False,
                antialias=antialias,
                feature_extractor_weights_path=os.fspath(weights),
            ).to(device or "cpu")
        except Exception as err:  # a wrong or corrupt file: say so in one line
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UDPMError(f"cannot load Inception weights {weights}: {message}") from None
        self.resize_mode = resize_mode(antialias)
        self.network_id = NETWORK_ID

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of images in [-1, 1], (N, 3, H, W)."""
        device = self.metric.real_features_sum.device
        self.metric.update(to_uint8(images).to(device), real=real)

    def real_state(self) -> dict[str, torch.Tensor]:
        """The accumulated real-image statistics, for the reference cache."""
        m = self.metric
        return {
            "real_features_sum": m.real_features_sum,
            "real_features_cov_sum": m.real_features_cov_sum,
            "real_features_num_samples": m.real_features_num_samples,
        }

    def load_real_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            current = getattr(self.metric, name)
            setattr(self.metric, name, value.to(current.device, current.dtype))

    def compute(self) -> float:
        return float(self.metric.compute())
