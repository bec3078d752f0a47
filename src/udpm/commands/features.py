"""``udpm features``: train the feature network that FD, KID and precision/recall use.

The recipe is `udpm.eval.feature_training`; the network and its file format are
`udpm.eval.features`. Retrain the shipped weights (deterministic given ``--seed``)::

    udpm features --data emoji32 --out src/udpm/assets/features/emoji32.safetensors
"""

from __future__ import annotations

import json
from pathlib import Path

HELP = "train the classifier whose penultimate layer is the feature of FD, KID and P/R"


def register(sub) -> None:
    p = sub.add_parser(
        "features",
        help=HELP,
        description="Train the classifier whose penultimate layer is udpm's feature for FD, "
        "KID and precision/recall, and save it as safetensors.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p) -> None:
    """The training options of `udpm.eval.feature_training.TrainOptions`, defaults from it."""
    from udpm.eval.feature_training import TrainOptions

    d = TrainOptions()
    p.add_argument("--data", default=d.data, help="labelled SOURCE: embedded name or path")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of split, init and batches")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW, cosine)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument(
        "--heldout-fraction",
        type=float,
        default=d.heldout_fraction,
        help="fraction of each class held out to measure accuracy",
    )
    p.add_argument(
        "--widths", default=",".join(map(str, d.widths)), help="channels per stage, comma-separated"
    )
    p.add_argument(
        "--convs-per-stage", type=int, default=d.convs_per_stage, help="3x3 convs per stage"
    )
    p.add_argument(
        "--balance",
        type=float,
        default=d.balance,
        help="class loss weight is count^-BALANCE (0 plain cross-entropy, 1 inverse frequency)",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")


def run(args) -> int:
    from udpm.errors import UDPMError
    from udpm.eval.feature_training import TrainOptions, train_feature_network

    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        raise UDPMError(f"--widths must be comma-separated integers, got {args.widths!r}")
    options = TrainOptions(
        data=args.data,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        heldout_fraction=args.heldout_fraction,
        widths=widths,
        convs_per_stage=args.convs_per_stage,
        balance=args.balance,
        threads=args.threads,
    )
    info = train_feature_network(options, out=args.out, log=print)
    print(json.dumps(info, indent=1))
    return 0
