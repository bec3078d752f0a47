"""``udpm train``: train a model into a run directory."""

from __future__ import annotations

from pathlib import Path

HELP = "train UDPM (or a baseline) on your images; writes a run directory"


def register(sub) -> None:
    from udpm.config import PRESETS
    from udpm.methods import names

    p = sub.add_parser(
        "train",
        help=HELP,
        description=HELP + ". Checkpoints are "
        "self-describing: 'udpm sample --checkpoint RUN' needs nothing else. Under "
        "torchrun (torchrun --nproc_per_node=N -m udpm.cli train ...) the processes share "
        "each global batch.",
    )
    p.add_argument(
        "--data",
        help="SOURCE: an .npz, an image folder, a .zip of images, the "
        "CIFAR-10 python tarball, or an embedded data set name (emoji32). "
        "Default: the preset's",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="run directory (created; an existing run is never overwritten unless --resume)",
    )
    p.add_argument(
        "--preset",
        default="emoji32-cpu",
        choices=sorted(PRESETS),
        help="hyperparameters to start from (default: emoji32-cpu)",
    )
    p.add_argument(
        "--method",
        choices=names(),
        help="the method (default: the preset's); its settings start from its paper's "
        "defaults, so prefer a preset made for it (e.g. emoji32-cpu-ddpm)",
    )
    p.add_argument(
        "--autoencoder",
        help="ldm only: the stage-1 model (a --method autoencoder checkpoint or run directory)",
    )
    p.add_argument("--steps", type=int, help="total number of training steps")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly "
        "where its newest checkpoint stopped (its config is reused; only --steps "
        "may change)",
    )
    p.add_argument(
        "--batch-size", type=int, help="global batch size, over all processes under torchrun"
    )
    p.add_argument(
        "--micro-batch",
        type=int,
        help="per-device micro-batch; the global batch must be processes × micro-batch × "
        "accumulation steps (default: global batch / processes, no accumulation)",
    )
    p.add_argument("--lr", type=float, help="learning rate (the method's optimiser, G and D)")
    p.add_argument("--seed", type=int, help="seed of every random generator of the run")
    p.add_argument("--resolution", type=int, help="resize and centre-crop images to this")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--class-conditional",
        action="store_true",
        default=None,
        help="condition on the data set's class labels",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set ema_decay=0.999 or "
        "--set network.model_channels=64 or --set r1=[0.1,0.2,0.4] (repeatable; values are "
        "YAML, converted to the field's type; keys of the method's settings and optimiser "
        "work unprefixed, e.g. lr, warmup, T)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_config(args):
    from udpm.config import apply_overrides, preset_config

    config = preset_config(args.preset)
    flags = {
        "data": args.data,
        "method": args.method,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "micro_batch": args.micro_batch,
        "lr": args.lr,
        "seed": args.seed,
        "resolution": args.resolution,
        "device": args.device,
        "class_conditional": args.class_conditional,
        "autoencoder": args.autoencoder,
    }
    assignments = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return apply_overrides(config, assignments + list(args.overrides))


def run(args) -> int:
    from udpm.train.distributed import env_rank
    from udpm.train.loop import train

    config = build_config(args)
    # Under torchrun every process runs this; train() joins them (see 'Many GPUs').
    path = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    if env_rank() == 0:
        print(f"trained {config.method}: {path}")
    return 0
