"""``udpm info``: what a checkpoint is and how it was trained."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "describe a checkpoint: method, data, step, training time and config"


def register(sub) -> None:
    p = sub.add_parser("info", help=HELP, description=HELP + ".")
    p.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        help="model file or run directory (default: the shipped pretrained model)",
    )
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from udpm.checkpoint import read_meta
    from udpm.pipeline import model_file, pretrained_path

    path = pretrained_path() if args.checkpoint is None else model_file(args.checkpoint)
    meta = read_meta(path)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    from udpm.config import Config
    from udpm.methods import get_spec

    config = Config.from_dict(meta["config"])
    cfg = config.to_dict()
    print(f"checkpoint   {path}")
    print(f"method       {meta['method']} ({meta['kind']}, EMA weights)")
    print(
        f"data         {meta.get('data')} at {cfg['resolution']} px, {cfg['channels']} channels"
        f", {_classes(config, int(meta.get('num_classes') or 0))}"
    )
    print(
        f"trained      {meta['step']} steps, batch {cfg['batch_size']}, "
        f"{meta.get('train_seconds', 0) / 60:.1f} min of training"
    )
    # num_classes is filled in when the network is built (from the data), not configured.
    network = {k: v for k, v in cfg["network"].items() if k != "num_classes"}
    print(f"network      {network}")
    print(f"process      {get_spec(config.method).describe(config)}")
    print(f"optimiser    {config.optim}")
    print(f"version      udpm {meta.get('udpm_version')}")
    return 0


def _classes(config, num_classes: int) -> str:
    if config.class_conditional and num_classes:
        return f"class-conditional on {num_classes} classes"
    if num_classes:
        return f"unconditional ({num_classes} classes in the data, unused)"
    return "unconditional"
