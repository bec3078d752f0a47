"""``udpm interpolate | swap | perturb``: the latent-space tools of ``udpm.latent``.

Every latent argument is an integer seed (the image ``udpm sample --seed S --n 1`` makes)
or a ``.latent.safetensors`` file (``udpm sample --save-latents`` writes them).
"""

from __future__ import annotations

import json
from pathlib import Path

LATENT_HELP = "an integer seed or a .latent.safetensors file"


def _common(p) -> None:
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="UDPM model file or run directory (default: the pretrained model shipped with udpm)",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (created if needed)")
    p.add_argument(
        "--class",
        dest="class_label",
        type=int,
        help="class of the latents given as seeds, for class-conditional models "
        "(default: the seed's random class, as in 'udpm sample')",
    )
    p.add_argument(
        "--any-checkpoint",
        action="store_true",
        help="accept latent files written with another checkpoint (their noise maps are "
        "reused as they are; shapes must still match)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def register(sub) -> None:
    text = "images between 2 latents (a row) or 4 latents (a grid), variance-preserving"
    p = sub.add_parser(
        "interpolate",
        help=text,
        description=text + ": every noise map becomes η(δ e1 + √(1-δ²) e2) + "
        "√(1-η²)(δ e3 + √(1-δ²) e4), η and δ going from 1 to 0 along the grid, so e1 is top "
        "left, e2 top right, e3 bottom left and e4 bottom right. Two latents give the top "
        "row, δ A + √(1-δ²) B. Writes OUT/interpolation.png.",
    )
    p.add_argument("latents", nargs="+", metavar="LATENT", help=LATENT_HELP + " (2 or 4 of them)")
    p.add_argument(
        "--steps", type=int, default=8, help="images per side, ends included (default 8)"
    )
    p.add_argument(
        "--slerp",
        action="store_true",
        help="interpolate each noise map spherically instead of with cos/sin weights",
    )
    p.add_argument(
        "--gif",
        action="store_true",
        help="also write OUT/interpolation.gif (a row plays there and back, a grid row by "
        "row in a zigzag)",
    )
    _common(p)
    p.set_defaults(func=run_interpolate)

    text = "what each level controls: image B with its level-l noise map taken from A"
    p = sub.add_parser(
        "swap",
        help=text,
        description=text + ". Writes OUT/swap.png, the row [A, swapped at level 1, .., "
        "swapped at level L, B]; level 1 is the finest, level L the coarsest.",
    )
    p.add_argument("a", metavar="A", help=LATENT_HELP + "; the level-l maps come from it")
    p.add_argument("b", metavar="B", help=LATENT_HELP + "; the image that is changed")
    _common(p)
    p.set_defaults(func=run_swap)

    text = "variations of one image made by perturbing one level's noise map"
    p = sub.add_parser(
        "perturb",
        help=text,
        description=text + ": e_l becomes γ e_l + √(1-γ²) n, every other map is kept. "
        "Writes OUT/perturb.png, one row per level (first column: the image itself); with "
        "--pca K also OUT/pca.png (the top K principal components of the perturbed images, "
        "one row per level) and prints each level's share of the variance.",
    )
    p.add_argument("latent", metavar="LATENT", help=LATENT_HELP)
    p.add_argument(
        "--gamma",
        type=float,
        default=0.9,
        help="how much of the original map is kept, in [0, 1] (default 0.9; 1: no change)",
    )
    p.add_argument("--level", type=int, help="perturb only this level (default: every level)")
    p.add_argument("--n", type=int, default=8, help="variations per level (default 8)")
    p.add_argument(
        "--noise-seed", type=int, default=0, help="seed of the perturbations n (default 0)"
    )
    p.add_argument(
        "--pca",
        type=int,
        metavar="K",
        help="also compute the top K principal components per level (paper figure 8: 8)",
    )
    p.add_argument(
        "--pca-samples",
        type=int,
        default=128,
        help="perturbed images per level for --pca (default 128)",
    )
    p.add_argument(
        "--json", action="store_true", help="with --pca, also write the report as OUT/pca.json"
    )
    _common(p)
    p.set_defaults(func=run_perturb)


def _load(args):
    import udpm
    from udpm.device import resolve_device
    from udpm.latent import require_udpm

    pipe = udpm.load(args.checkpoint, device=resolve_device(args.device))
    require_udpm(pipe)
    return pipe


def _latents(pipe, args, specs):
    """Seeds or files -> Latent objects; ``--any-checkpoint`` detaches files from their hash."""
    from udpm.latent import resolve_latent

    latents = [
        resolve_latent(pipe, s, args.class_label, check_hash=not args.any_checkpoint) for s in specs
    ]
    if args.any_checkpoint:
        for lat in latents:
            lat.model_sha256 = None
    return latents


def run_interpolate(args) -> int:
    from udpm.data import save_image_grid
    from udpm.errors import UDPMError
    from udpm.latent import interpolate
    from udpm.latent.gif import gif_frames, save_gif

    if len(args.latents) not in (2, 4):
        raise UDPMError(
            f"interpolate takes 2 latents (a row) or 4 (a grid), got {len(args.latents)}"
        )
    pipe = _load(args)
    images = interpolate(pipe, _latents(pipe, args, args.latents), args.steps, slerp=args.slerp)
    args.out.mkdir(parents=True, exist_ok=True)
    path = save_image_grid(
        images.reshape(-1, *images.shape[-3:]), args.out / "interpolation.png", nrow=args.steps
    )
    print(f"wrote {path}")
    if args.gif:
        gif = args.out / "interpolation.gif"
        save_gif(gif_frames(images), gif, scale=max(1, 128 // images.shape[-1]))
        print(f"wrote {gif}")
    return 0


def run_swap(args) -> int:
    from udpm.data import save_image_grid
    from udpm.latent import swap

    pipe = _load(args)
    a, b = _latents(pipe, args, [args.a, args.b])
    images = swap(pipe, a, b)
    path = save_image_grid(images, args.out / "swap.png", nrow=len(images))
    L = pipe.process.levels
    print(f"wrote {path}: A, B with A's map at level 1..{L} (fine to coarse), B")
    return 0


def _print_report(report: dict) -> None:
    print("level  share of variance  top-k explained variance ratios")
    for row in report["levels"]:
        ratios = " ".join(f"{v:.3f}" for v in row["explained_variance_ratio"])
        print(f"{row['level']:>5}  {row['share']:>17.3f}  {ratios}")


def run_perturb(args) -> int:
    import torch

    from udpm.data import save_image_grid
    from udpm.errors import UDPMError
    from udpm.latent import decode, perturb, perturbation_pca, variance_report
    from udpm.latent.mixing import check_gamma

    check_gamma(args.gamma)
    if args.n < 1:
        raise UDPMError(f"--n must be at least 1, got {args.n}")
    if args.json and args.pca is None:
        raise UDPMError("--json writes the --pca report; give --pca K too")
    pipe = _load(args)
    (latent,) = _latents(pipe, args, [args.latent])
    L = pipe.process.levels
    if args.level is not None and not 1 <= args.level <= L:
        raise UDPMError(f"--level must be in 1..{L}, got {args.level}")
    levels = [args.level] if args.level is not None else list(range(1, L + 1))
    original = decode(pipe, [latent])
    rows = [
        torch.cat([original, perturb(pipe, latent, l, args.gamma, args.n, args.noise_seed)])
        for l in levels
    ]
    path = save_image_grid(torch.cat(rows), args.out / "perturb.png", nrow=args.n + 1)
    print(f"wrote {path}: one row per level {levels}, the image itself first")
    if args.pca is None:
        return 0
    results = [
        perturbation_pca(
            pipe, latent, l, args.gamma, n=args.pca_samples, k=args.pca, seed=args.noise_seed
        )
        for l in levels
    ]
    pca_path = save_image_grid(
        torch.cat([r.display() for r in results]), args.out / "pca.png", nrow=args.pca
    )
    print(f"wrote {pca_path}: top {args.pca} components, one row per level {levels}")
    report = {
        "checkpoint": pipe.meta.get("path"),
        "latent": args.latent,
        "gamma": args.gamma,
        "samples": args.pca_samples,
        "k": args.pca,
        "noise_seed": args.noise_seed,
        **variance_report(results),
    }
    _print_report(report)
    if args.json:
        (args.out / "pca.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out / 'pca.json'}")
    return 0
