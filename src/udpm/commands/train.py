"""``udpm train``: train a model into a run directory."""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "train UDPM (or a baseline) on your images; writes a run directory"
DEFAULT_PRESET = "emoji32-cpu"


def register(sub) -> None:
    from udpm.config import PRESETS
    from udpm.methods import names
    from udpm.train.preempt import EXIT_PREEMPTED

    p = sub.add_parser(
        "train",
        help=HELP,
        description=HELP + ". Checkpoints are "
        "self-describing: 'udpm sample --checkpoint RUN' needs nothing else. Under "
        "torchrun (torchrun --nproc_per_node=N -m udpm.cli train ...) the processes share "
        "each global batch. SIGTERM, SIGINT or SIGUSR1 saves the current step and exits "
        f"with status {EXIT_PREEMPTED}; a second signal exits at once.",
    )
    p.add_argument(
        "--data",
        help="SOURCE: an .npz, an image folder, a .zip of images, the "
        "CIFAR-10 python tarball, or an embedded data set name (emoji32). "
        "Default: the preset's",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="run directory (created; an existing run is never overwritten unless --resume); "
        "required unless --list-keys",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"hyperparameters to start from (default: {DEFAULT_PRESET})",
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
    p.add_argument(
        "--steps",
        type=int,
        help="total number of training steps (default: the preset's; emoji32-cpu: "
        f"{PRESETS['emoji32-cpu']['steps']}; see --list-keys)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly where its newest intact checkpoint "
        "stopped. Its config is kept, and so is its target unless --steps is given; other "
        "flags must agree with it (a moved --data must hold the same images)",
    )
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="resume if --out holds a checkpoint, else start a new run: one command "
        "for a job that a scheduler may requeue",
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
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the generator's forward through torch.compile (compiles first)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="YAML of the --set keys (flat, as --list-keys prints them, or nested), applied "
        "over the preset and under the flags and --set",
    )
    p.add_argument(
        "--list-keys",
        action="store_true",
        help="print every --set key with its value for this preset (and --method, --config, "
        "--set), as YAML that --config reads back, then exit",
    )
    p.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="stop (saved) at this step without changing the planned --steps: the way "
        "to train in chunks, since raising --steps on each resume would stretch warm-up, "
        "cosine decay and annealed instance noise to each chunk's end",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_config(args):
    """The config the flags describe, and the fields they set explicitly (for a resume)."""
    from udpm.config import apply_overrides, preset_config
    from udpm.config.overrides import file_assignments

    config = preset_config(args.preset or DEFAULT_PRESET)
    from_file = file_assignments(args.config) if args.config else []
    config = apply_overrides(config, from_file)
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
    config = apply_overrides(config, assignments + list(args.overrides))
    from udpm.config.overrides import key_path

    explicit = {key_path(config, k) for k, v in flags.items() if v is not None}
    explicit |= {key_path(config, item.split("=", 1)[0]) for item in args.overrides + from_file}
    if args.preset is not None:  # a preset sets every field but the target and the data
        explicit |= set(config.to_dict()) - {"steps", "data"}
    return config, explicit


def run(args) -> int:
    from udpm.checkpoint import read_meta
    from udpm.train.distributed import env_rank
    from udpm.train.loop import train
    from udpm.train.preempt import Preempted

    config, explicit = build_config(args)
    notes = []
    if not args.resume:  # a resumed run keeps its own config
        from udpm.config.fit import fit_to_data

        config, notes = fit_to_data(config, explicit)
    if args.list_keys:
        from udpm.config.overrides import list_keys

        print(list_keys(config), end="")
        return 0
    if args.out is None:
        from udpm.errors import UDPMError

        raise UDPMError("the following argument is required: --out")
    if env_rank() == 0 and notes:
        print("\n".join(notes), flush=True)
    resume = "auto" if args.auto_resume else args.resume
    try:
        # Under torchrun every process runs this; train() joins them (see 'Many GPUs').
        path = train(
            config,
            args.out,
            resume=resume,
            progress=not args.no_progress,
            explicit=explicit,
            compile=args.compile,
            stop_at=args.stop_at,
        )
    except Preempted as exc:
        if env_rank() == 0:
            print(f"udpm train: {exc}", file=sys.stderr)
        return exc.exit_status
    if env_rank() == 0:
        meta = read_meta(path)  # the run's own method, not the flags' default
        print(f"trained {meta['method']} to step {meta['step']}: {path}")
    return 0
