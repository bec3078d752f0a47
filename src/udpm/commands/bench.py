"""``udpm bench``: network calls, FLOPs, wall time and sampler overhead of sampling."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "measure sampling cost: NFE, FLOPs per image (torch's counter), ms per image, overhead"


def register(sub) -> None:
    from udpm.commands.sample import add_sampler_arguments
    from udpm.config import PRESETS

    p = sub.add_parser(
        "bench",
        help=HELP,
        description=HELP + ". For UDPM it also reports "
        "one full-resolution pass of the same network and the ratio (the "
        "paper's '3 steps = 0.3 of one denoising step').",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--checkpoint",
        type=Path,
        help="model file or run directory (default: the shipped pretrained model)",
    )
    src.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="measure a preset's network with random weights instead (e.g. cifar10, ffhq64)",
    )
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed repeats after one warm-up "
        "(default 5); the median is reported with the min and max",
    )
    p.add_argument("--batches", default="1,64", help="batch sizes to time (default 1,64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_sampler_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import udpm
    from udpm.commands.sample import sampler_kwargs
    from udpm.device import resolve_device
    from udpm.errors import UDPMError
    from udpm.eval.presets import preset_pipeline
    from udpm.eval.speed import benchmark

    device = resolve_device(args.device)
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        raise UDPMError(f"--batches must be comma-separated integers, got {args.batches!r}")
    pipe = (
        preset_pipeline(args.preset, device)
        if args.preset
        else udpm.load(args.checkpoint, device=device)
    )
    result = benchmark(pipe, repeats=args.repeats, batches=batches, **sampler_kwargs(args))
    result["source"] = f"preset {args.preset}" if args.preset else pipe.meta.get("path")
    for key in (
        "nfe",
        "flops_per_image",
        "flops_full_resolution_pass",
        "flops_ratio",
        *[
            k
            for k in result
            if k.startswith(("ms_per_image_batch", "sampler_overhead")) and not k.endswith("range")
        ],
    ):
        value = result[key]
        print(f"{key:40s} {value:.4g}" if isinstance(value, float) else f"{key:40s} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0
