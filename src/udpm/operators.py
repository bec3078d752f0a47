"""The UDPM degradation operator ``H = S_γ W`` and its adjoint ``Hᵀ``.

``W`` blurs each channel with a 2-D kernel ``w`` and ``S_γ`` keeps one pixel in ``γ`` along
each axis. When the support of ``w`` fits inside one ``γ x γ`` cell the cells do not overlap,
so ``H Hᵀ = ||w||² I`` (Lemma 1 of the UDPM paper) and ``Hᵀ H / ||w||²`` is an orthogonal
projector. The whole process relies on that identity, so larger kernels are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from udpm.errors import UDPMError


def box_kernel(factor: int) -> torch.Tensor:
    """The ``γ x γ`` box with unit L2 norm: every tap is ``1/γ``."""
    return torch.full((factor, factor), 1.0 / factor, dtype=torch.float64)


def _support(kernel: torch.Tensor) -> tuple[slice, slice]:
    """Bounding box of the non-zero taps of ``kernel``."""
    rows = torch.nonzero(kernel.abs().sum(dim=1)).flatten()
    cols = torch.nonzero(kernel.abs().sum(dim=0)).flatten()
    if rows.numel() == 0:
        raise UDPMError("the blur kernel is all zeros")
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


class Downsample:
    """``H = S_γ W``: blur with ``kernel`` and keep every ``factor``-th pixel, per channel.

    Args:
        factor: the integer subsampling factor ``γ >= 2``.
        kernel: a 2-D tensor whose non-zero taps fit in ``factor x factor`` (it may be given
            padded with zeros). ``None`` means the box with unit L2 norm, which takes a fast
            path: ``H x = γ · avg_pool(x, γ)`` and ``Hᵀ y = nearest_up(y, γ) / γ``.

    ``op(x)`` maps (N, C, H, W) to (N, C, H/γ, W/γ); ``op.adjoint(y)`` maps back.
    """

    def __init__(self, factor: int = 2, kernel: torch.Tensor | None = None):
        if int(factor) != factor or factor < 2:
            raise UDPMError(f"the downsampling factor must be an integer >= 2, got {factor}")
        self.factor = int(factor)
        self.is_box = kernel is None
        self.kernel = box_kernel(self.factor) if kernel is None else self._check(kernel)
        self.norm_sq = float((self.kernel**2).sum())  # ||w||², the c of Lemma 1
        self.sum = float(self.kernel.sum())  # how H scales a constant image

    def _check(self, kernel) -> torch.Tensor:
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        if kernel.ndim != 2:
            raise ValueError(f"the blur kernel must be 2-D, got shape {tuple(kernel.shape)}")
        rows, cols = _support(kernel)
        height, width = rows.stop - rows.start, cols.stop - cols.start
        if height > self.factor or width > self.factor:
            raise ValueError(
                f"the blur kernel's support is {height}x{width}, larger than the factor "
                f"{self.factor}: Lemma 1 (H Hᵀ = ||w||² I) would not hold"
            )
        cell = torch.zeros(self.factor, self.factor, dtype=torch.float64)
        cell[:height, :width] = kernel[rows, cols]
        return cell

    def _weight(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        return self.kernel.to(x).expand(channels, 1, self.factor, self.factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``H x``: (N, C, H, W) -> (N, C, H/γ, W/γ)."""
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise UDPMError(
                f"image size {tuple(x.shape[-2:])} is not divisible by the factor {self.factor}"
            )
        if self.is_box:
            return F.avg_pool2d(x, self.factor) * self.factor
        return F.conv2d(x, self._weight(x), stride=self.factor, groups=x.shape[1])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Hᵀ y``: (N, C, h, w) -> (N, C, hγ, wγ)."""
        if self.is_box:
            return F.interpolate(y, scale_factor=self.factor, mode="nearest") / self.factor
        return F.conv_transpose2d(y, self._weight(y), stride=self.factor, groups=y.shape[1])

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``P x = Hᵀ H x / ||w||²``, the orthogonal projector onto the range of ``Hᵀ``."""
        return self.adjoint(self(x)) / self.norm_sq

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``H⁺ y = Hᵀ y / ||w||²``, a right inverse: ``H H⁺ y = y``."""
        return self.adjoint(y) / self.norm_sq

    def __repr__(self) -> str:
        kind = "box" if self.is_box else f"kernel={self.kernel.tolist()}"
        return f"Downsample(factor={self.factor}, {kind})"
