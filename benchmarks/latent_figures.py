"""Regenerate the README's latent-space pictures (paper figures 5, 8, 10, 13) into docs/images.

    python benchmarks/latent_figures.py                          # the shipped model
    python benchmarks/latent_figures.py --checkpoint runs/emoji32  # any UDPM checkpoint

Writes, all from ``udpm.load()`` and the public ``udpm.latent`` API:

- ``latent_interpolation.png``: the four-corner grid (e1 top left, e2 top right, e3 bottom
  left, e4 bottom right), every map mixed as η(δ e1 + √(1-δ²) e2) + √(1-η²)(δ e3 + √(1-δ²) e4);
- ``latent_interpolation.gif``: the same grid, frame by frame in a zigzag;
- ``latent_interpolation_rows.png``: two-latent rows, one pair per row;
- ``latent_swap.png``: one pair per row, [A, B with A's map at level 1, .., level L, B];
- ``latent_perturb.png``: one row per level, the image then variations with γ;
- ``latent_pca.png``: the top K principal components of ``--samples`` perturbed images,
  one row per level (paper figure 8);
- ``latent_pca.json``: each level's share of the variance, for every ``--pca-seeds`` image,
  and their mean; the shares are printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import udpm
from udpm.data import save_image_grid
from udpm.latent import (
    Latent,
    decode,
    interpolate,
    perturb,
    perturbation_pca,
    swap,
    variance_report,
)
from udpm.latent.gif import gif_frames, save_gif


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="UDPM model file or run directory")
    p.add_argument("--out", type=Path, default=Path("docs/images"), help="output folder")
    p.add_argument("--corners", type=int, nargs=4, default=[0, 1, 2, 3], help="grid seeds")
    p.add_argument("--steps", type=int, default=8, help="grid and row points per side")
    p.add_argument("--pairs", type=int, default=4, help="rows in the row and swap pictures")
    p.add_argument("--gamma", type=float, default=0.9, help="perturbation γ (paper: near 1)")
    p.add_argument("--samples", type=int, default=128, help="perturbed images per level")
    p.add_argument("--k", type=int, default=8, help="principal components per level")
    p.add_argument(
        "--pca-seeds", type=int, default=4, help="images (seeds 0..N-1) the shares average over"
    )
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of tiles")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    return p.parse_args(argv)


def grid(images: torch.Tensor, path: Path, nrow: int, scale: int) -> Path:
    """Save (N, C, H, W) images upscaled ``scale`` times, nearest neighbour."""
    big = images.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    path = save_image_grid(big, path, nrow=nrow, padding=2 * scale)
    print(f"wrote {path}")
    return path


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = udpm.load(args.checkpoint, device=args.device)
    L, out, s = model.process.levels, args.out, args.scale
    print(f"{model!r} from {model.meta['path']}")

    # Figures 5 and 13: interpolation, a four-corner grid and two-latent rows.
    corners = interpolate(model, args.corners, steps=args.steps)
    grid(corners.flatten(0, 1), out / "latent_interpolation.png", args.steps, s)
    save_gif(gif_frames(corners), out / "latent_interpolation.gif", scale=4)
    print(f"wrote {out / 'latent_interpolation.gif'}")
    seeds = range(10, 10 + 2 * args.pairs)
    rows = [interpolate(model, [a, b], steps=args.steps) for a, b in zip(seeds[::2], seeds[1::2])]
    grid(torch.cat(rows), out / "latent_interpolation_rows.png", args.steps, s)

    # Figure 10: swapping one level's map.
    seeds = range(20, 20 + 2 * args.pairs)
    rows = [swap(model, a, b) for a, b in zip(seeds[::2], seeds[1::2])]
    grid(torch.cat(rows), out / "latent_swap.png", L + 2, s)

    # Figure 8: perturbation of one level, and the PCA of 128 perturbed images per level.
    original = decode(model, [Latent.from_seed(model, 0)])
    rows = [torch.cat([original, perturb(model, 0, l, args.gamma, n=8)]) for l in range(1, L + 1)]
    grid(torch.cat(rows), out / "latent_perturb.png", 9, s)
    reports = []
    for seed in range(args.pca_seeds):
        results = [
            perturbation_pca(model, seed, l, args.gamma, n=args.samples, k=args.k)
            for l in range(1, L + 1)
        ]
        if seed == 0:
            grid(torch.cat([r.display() for r in results]), out / "latent_pca.png", args.k, s)
        reports.append({"seed": seed, **variance_report(results)})
    mean = [sum(r["levels"][l]["share"] for r in reports) / len(reports) for l in range(L)]
    summary = {
        "checkpoint": model.meta["path"],
        "step": model.meta.get("step"),
        "gamma": args.gamma,
        "samples": args.samples,
        "k": args.k,
        "mean_share": {f"level_{l + 1}": round(v, 4) for l, v in enumerate(mean)},
        "per_image": reports,
    }
    (out / "latent_pca.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / 'latent_pca.json'}")
    print(f"share of the image variance from perturbing each level (γ = {args.gamma}):")
    for report in reports:
        shares = "  ".join(f"l{r['level']} {r['share']:.3f}" for r in report["levels"])
        print(f"  seed {report['seed']}: {shares}")
    print("  mean:   " + "  ".join(f"l{l + 1} {v:.3f}" for l, v in enumerate(mean)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
