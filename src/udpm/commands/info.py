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
    from udpm.checkpoint import read_meta, resolve_model_file
    from udpm.pipeline import pretrained_path

    path = pretrained_path() if args.checkpoint is None else resolve_model_file(args.checkpoint)
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
        f", classes: {meta.get('num_classes') or 'unconditional'}"
    )
    print(
        f"trained      {meta['step']} steps, batch {cfg['batch_size']}, "
        f"{meta.get('train_seconds', 0) / 60:.1f} min of training"
    )
    print(f"network      {cfg['network']}")
    print(f"process      {get_spec(config.method).describe(config)}")
    print(f"optimiser    {config.optim}")
    print(f"version      udpm {meta.get('udpm_version')}")
    return 0
