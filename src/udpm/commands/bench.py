"""``udpm bench``: network calls, FLOPs, wall time and sampler overhead of sampling."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "measure sampling cost: NFE, FLOPs per image (torch's counter), ms per image, overhead"


def register(sub) -> None:
    from udpm.commands.accel import add_accel_arguments
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
    add_accel_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import udpm
    from udpm.commands.accel import accel_options
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
    print(
        f"timing {pipe.config.method} sampling on {device}: {args.repeats} repeats after one "
        f"warm-up at batch sizes {', '.join(map(str, batches))} (--repeats, --batches)",
        flush=True,
    )
    result = benchmark(
        pipe,
        repeats=args.repeats,
        batches=batches,
        accel=accel_options(args),
        **sampler_kwargs(args),
    )
    result["source"] = f"preset {args.preset}" if args.preset else pipe.meta.get("path")
    for line in report_lines(result):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def flops_words(flops: float) -> str:
    """``0.279 GFLOPs``, ``42.1 GFLOPs``, ``1.3 TFLOPs``: three significant figures."""
    if flops >= 1e12:
        return f"{flops / 1e12:.3g} TFLOPs"
    return f"{flops / 1e9:.3g} GFLOPs" if flops >= 1e7 else f"{flops / 1e6:.3g} MFLOPs"


def ms_words(ms: float) -> str:
    return (
        f"{ms * 1000:.3g} µs"
        if ms < 1
        else f"{ms / 1000:.3g} s"
        if ms >= 10_000
        else f"{ms:.3g} ms"
    )


def report_lines(result: dict) -> list[str]:
    """What ``udpm bench`` prints: each quantity once, in human units, medians with spread."""
    c, h, w = result["image_shape"]
    lines = [
        f"model        {result['method']}, {c}x{h}x{w}, {result['parameters'] / 1e6:.2f}M "
        f"parameters, on {result['device']}",
        f"calls        {result['nfe']} network calls per image",
        f"FLOPs        {flops_words(result['flops_per_image'])} per image; one full-resolution "
        f"pass {flops_words(result['flops_full_resolution_pass'])}; ratio "
        f"{result['flops_ratio']:.3g}",
    ]
    for key in [k for k in result if k.startswith("ms_per_image_batch") and k[-1].isdigit()]:
        batch = key.removeprefix("ms_per_image_batch")
        low, high = result[f"{key}_range"]
        overhead = result[f"sampler_overhead_fraction_batch{batch}"]
        lines.append(
            f"batch {batch:6s} {ms_words(result[key])} per image (median of {result['repeats']}; "
            f"range {ms_words(low)} to {ms_words(high)}), {overhead:.0%} outside network calls"
        )
        if high > 1.5 * low:
            lines.append(
                f"             the spread at batch {batch} is wide: the machine is busy or "
                "warming up; compare medians only from quiet runs (more --repeats helps)"
            )
    return lines
