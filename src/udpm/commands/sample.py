"""``udpm sample``: PNG images from a checkpoint (or the shipped pretrained model)."""

from __future__ import annotations

from pathlib import Path

HELP = "generate PNG images from a checkpoint"


def register(sub) -> None:
    p = sub.add_parser(
        "sample",
        help=HELP,
        description=HELP + "; the same checkpoint, seed "
        "and n always give the same images (image i uses seed SEED+i).",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="model file or run directory (default: the pretrained model shipped with udpm)",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory for the PNGs")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument(
        "--class",
        dest="class_label",
        type=int,
        help="class index, for class-conditional models (default: a random class per seed)",
    )
    p.add_argument("--grid", action="store_true", help="also write grid.png of all images")
    p.add_argument(
        "--levels",
        action="store_true",
        help="UDPM: also write levels.png, each "
        "row an image's per-level predictions x_L..x_0 at full size",
    )
    p.add_argument("--batch-size", type=int, default=256, help="images per network batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_sampler_arguments(p)
    p.add_argument(
        "--save-latents",
        action="store_true",
        help="UDPM: write each image's noise maps next to it (NAME.latent.safetensors)",
    )
    p.set_defaults(func=run)


def add_sampler_arguments(p) -> None:
    """``--sampler/--steps/--eta/--clip-x0``, shared by sample, eval and bench (baselines)."""
    import argparse

    p.add_argument(
        "--sampler",
        choices=("ancestral", "ddim"),
        help="DDPM/simple: the sampler (default: the model's, ancestral)",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="DDPM/simple: number of sampling steps (default: DDPM ancestral T = 1000, "
        "DDIM 50, simple 256; UDPM always takes its L levels)",
    )
    p.add_argument("--eta", type=float, help="DDIM: stochasticity η in [0, 1] (default 0)")
    p.add_argument(
        "--clip-x0",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="DDPM/simple: clip the predicted x̂₀ to [-1, 1] at every step, as Ho et al.'s "
        "sampler does (default: on)",
    )


def sampler_kwargs(args) -> dict:
    given = {
        "sampler": args.sampler,
        "steps": args.steps,
        "eta": args.eta,
        "clip_x0": getattr(args, "clip_x0", None),
    }
    return {k: v for k, v in given.items() if v is not None}


def run(args) -> int:
    from udpm.train import distributed as dist

    with dist.process_group(args.device):  # under torchrun: seeds sharded over the ranks
        return write_samples(args)


def write_samples(args) -> int:
    import udpm
    from udpm.data import save_image_grid, save_images
    from udpm.device import resolve_device
    from udpm.errors import UDPMError
    from udpm.samplers.dispatch import sample_sharded
    from udpm.train import distributed as dist

    if args.n < 1:
        raise UDPMError(f"--n must be at least 1, got {args.n}")
    pipe = udpm.load(args.checkpoint, device=dist.local_device(resolve_device(args.device)))
    kwargs = sampler_kwargs(args)
    out = sample_sharded(
        pipe,
        args.n,
        seed=args.seed,
        class_label=args.class_label,
        batch_size=args.batch_size,
        return_levels=args.levels,
        progress=True,
        **kwargs,
    )
    if dist.rank() != 0:  # rank 0 holds every image and writes them
        return 0
    images, levels = out if args.levels else (out, None)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = save_images(images, args.out, prefix="seed", start=args.seed)
    if args.grid:
        save_image_grid(images, args.out / "grid.png")
    if levels is not None:
        save_image_grid(levels.flatten(0, 1), args.out / "levels.png", nrow=levels.shape[1])
    if args.save_latents:
        from udpm.latent import save_latents_for

        save_latents_for(pipe, paths, seed=args.seed, class_label=args.class_label)
    print(f"wrote {len(images)} images to {args.out}")
    return 0
