"""Figures of the UDPM process on real images (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

import torch

from udpm.processes.upsampling import UpsamplingProcess


def _display(x: torch.Tensor) -> torch.Tensor:
    """(C, h, w) -> (h, w, C) in [0, 1], min-max normalised (levels differ in scale)."""
    x = x.float()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    return x.permute(1, 2, 0).squeeze(-1)


def _figure(rows: int, cols: int, size: float = 1.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _show(ax, image: torch.Tensor) -> None:
    ax.imshow(
        _display(image).numpy(),
        interpolation="nearest",
        cmap="gray" if image.shape[0] == 1 else None,
    )


def forward_process_figure(
    process: UpsamplingProcess, x0: torch.Tensor, path: Path, seed: int = 0
) -> Path:
    """The paper's Figure 1: ``x_0 → x_1 → .. → x_L`` for each image of ``x0`` (N, C, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    L = process.levels
    fig, axes = _figure(len(x0), L + 1)
    x = x0
    for l in range(L + 1):
        if l:
            noise = torch.randn(process.operator(x).shape, generator=gen)
            x = process.q_step(x, l, noise=noise)
        for i in range(len(x0)):
            _show(axes[i, l], x[i])
        axes[0, l].set_title(f"$x_{l}$ ({x.shape[-1]}px)", fontsize=9)
    fig.suptitle(
        "UDPM forward process: blur, subsample, add noise (each panel min-max scaled)", fontsize=9
    )
    return _save(fig, path)


def posterior_figure(
    process: UpsamplingProcess, x0: torch.Tensor, path: Path, draws: int = 4, seed: int = 0
) -> Path:
    """Exact posterior draws ``x_{l-1} ~ q(x_{l-1} | x_l, x_0)`` given the true ``H^{l-1} x_0``.

    One row per level ``l = L..2`` for the first image of ``x0``.
    """
    gen = torch.Generator().manual_seed(seed)
    L, x0 = process.levels, x0[:1]
    fig, axes = _figure(L - 1, draws + 2)
    for row, l in enumerate(range(L, 1, -1)):
        x_l = process.q_sample(
            x0, l, noise=torch.randn(process.marginal(x0, l)[0].shape, generator=gen)
        )
        h = process.degrade(x0, l - 1)
        _show(axes[row, 0], x_l[0])
        _show(axes[row, 1], h[0])
        axes[row, 0].set_ylabel(f"l = {l}", fontsize=9)
        for j in range(draws):
            z = torch.randn(h.shape, generator=gen)
            _show(axes[row, j + 2], process.posterior_sample(x_l, h, l, noise=z)[0])
    axes[0, 0].set_title("$x_l$", fontsize=9)
    axes[0, 1].set_title("$H^{l-1}x_0$", fontsize=9)
    for j in range(draws):
        axes[0, j + 2].set_title(f"draw {j + 1}", fontsize=9)
    fig.suptitle(
        "Exact posterior draws of $x_{l-1}$ given $x_l$ and the true $H^{l-1}x_0$", fontsize=9
    )
    return _save(fig, path)


def levels_figure(previews: torch.Tensor, path: Path) -> Path:
    """Rows of per-level predictions ``(N, L, C, H, W)`` from ``sample(return_levels=True)``."""
    n, L = previews.shape[:2]
    fig, axes = _figure(n, L)
    for i in range(n):
        for j in range(L):
            _show(axes[i, j], previews[i, j])
    for j in range(L):
        axes[0, j].set_title(f"f(x_{L - j}), level {L - j}", fontsize=8)
    fig.suptitle("UDPM sampling: each network call denoises and upsamples", fontsize=9)
    return _save(fig, path)


def labelled_grid(
    images: torch.Tensor,
    path: Path,
    ncol: int,
    col_labels=(),
    row_labels=(),
    title: str = "",
) -> Path:
    """Images (N, C, H, W) in [-1, 1], ``ncol`` a row, with column and row labels and a title.

    The companion of the pixel-exact grids (`udpm.data.save_image_grid`): the same images
    at their own scale (no min-max stretch), with the labels a reader needs.
    """
    nrow = -(-len(images) // ncol)
    fig, axes = _figure(nrow, ncol)
    for k, image in enumerate(images):
        ax = axes[k // ncol, k % ncol]
        x = ((image.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).squeeze(-1)
        ax.imshow(x.numpy(), interpolation="nearest", cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat[len(images) :]:
        ax.axis("off")
    for j, label in enumerate(col_labels):
        axes[0, j].set_title(label, fontsize=7)
    for i, label in enumerate(row_labels):
        axes[i, 0].set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
