"""Training throughput of UDPM recipes on this machine: images/s per level and per step.

    python benchmarks/train_speed.py --variants 0.1.0 anneal+authors-d+lazy --steps 32

The variants are those of ``udpm_ablation.py`` (``--set`` assignments over the preset),
measured side by side in one run, their steps alternated one by one so that a change in
the machine's load hits them alike. One training step = one D step and one G step at one
level (Algorithm 1); the whole-step figure averages the three levels as the variant draws
them (uniform, or its ``level_weights``). Per level the *mean* step time is used: lazy R1
makes one step in k dearer, and a median would hide it (use a multiple of ``r1_every`` for
``--steps``). Writes
``benchmarks/train_speed.json``.

    python benchmarks/train_speed.py --variants 0.1.0 --accel --out train_speed_accel.json

adds the first variant compiled (``udpm train --compile``), in bf16 autocast
(``--set amp=bf16``) and with channels_last weights, timed in the same alternation.

    python benchmarks/train_speed.py --variants 0.1.0+msb+nodrop 0.1.0 --bounds \
        --out train_speed_bounds.json

adds the first variant without R1 and without the adversarial part (no D step, no
adversarial term in G's loss): not recipes but ceilings, what the step would cost if that
part were free, so that no lever on that part can be expected to beat them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ACCEL = ("compile", "bf16", "channels_last")  # --accel: the first variant run these ways
# --bounds: the first variant with a part of its step removed (ceilings, not recipes)
BOUNDS = {"no-r1": ["r1=[0.0,0.0,0.0]"], "no-adv": ["lambda_adv=[0.0,0.0,0.0]"]}


def build(preset: str, sets: list[str], accel: str = "eager"):
    """The preset with ``sets`` applied, as a UDPM trainer; ``accel``: ``eager``, ``compile``
    (G's training forward through torch.compile, as ``udpm train --compile``), ``bf16``
    (bf16 autocast, as ``--set amp=bf16``) or ``channels_last`` (G's and D's weights)."""
    from udpm.config import preset_config
    from udpm.config.overrides import apply_overrides
    from udpm.methods.udpm import UDPMMethod

    config = apply_overrides(preset_config(preset), sets)
    dtype = torch.bfloat16 if accel == "bf16" else None
    method = UDPMMethod(config, "cpu", autocast_dtype=dtype)
    if accel == "compile":
        from udpm.accel import compile_network

        method.nets["G"] = compile_network(method.net("G"))
    if accel == "channels_last":  # weights in NHWC: oneDNN then runs the convs in NHWC
        for module in method.modules.values():
            module.to(memory_format=torch.channels_last)
    return config, method


def time_level(methods: dict, x0, level: int, warmup: int, steps: int) -> dict:
    """Mean seconds per step at ``level`` for each method, their steps alternated one by one
    (so a change in the machine's load hits all alike); steps count from 0, so lazy R1
    fires on the same steps for every variant."""
    times = {v: [] for v in methods}
    for method in methods.values():
        method.draw_level = lambda: level
    for i in range(warmup + steps):
        for v, method in methods.items():
            t0 = time.perf_counter()
            method.step(x0, None, i - warmup)
            if i >= warmup:
                times[v].append(time.perf_counter() - t0)
    return {v: statistics.mean(t) for v, t in times.items()}


def whole_step(levels: dict, weights) -> float:
    """Images/s of the average step: the levels' seconds per image weighted as the variant
    draws them (``level_weights``; None: uniform), so fewer draws of a dear level count."""
    weights = weights or [1.0] * len(levels)
    total = sum(weights)
    seconds = sum(w / total / levels[level] for w, level in zip(weights, sorted(levels)))
    return 1 / seconds


def main() -> None:
    sys.path.insert(0, str(HERE))
    from udpm_ablation import VARIANTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="emoji32-cpu", help="UDPM preset the variants start from")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["0.1.0", "anneal+authors-d+lazy"],
        choices=list(VARIANTS),
        help="recipes to compare (udpm_ablation.py)",
    )
    p.add_argument("--steps", type=int, default=32, help="timed steps per level")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per level")
    p.add_argument(
        "--accel",
        action="store_true",
        help="also time the first variant compiled, in bf16 and channels_last (the first call "
        "per level compiles, minutes on a CPU; it falls in the warm-up)",
    )
    p.add_argument(
        "--bounds",
        action="store_true",
        help="also time the first variant without R1 and without its adversarial part "
        "(ceilings for any lever on those parts)",
    )
    p.add_argument("--out", default="train_speed.json", help="results file in benchmarks/")
    args = p.parse_args()

    rows = {v: (VARIANTS[v][1], "eager") for v in args.variants}
    first = args.variants[0]
    if args.accel:
        rows |= {f"{first}@{a}": (VARIANTS[first][1], a) for a in ACCEL}
    if args.bounds:
        rows |= {f"{first}@{b}": (VARIANTS[first][1] + BOUNDS[b], "eager") for b in BOUNDS}
    built = {v: build(args.preset, sets, accel) for v, (sets, accel) in rows.items()}
    config = next(iter(built.values()))[0]
    torch.manual_seed(0)
    x0 = torch.rand(config.batch_size, config.channels, config.resolution, config.resolution)
    x0 = x0 * 2 - 1
    per_level = {v: {} for v in rows}
    methods = {v: method for v, (_, method) in built.items()}
    for level in range(1, config.settings.levels + 1):
        seconds = time_level(methods, x0, level, args.warmup, args.steps)
        for v in methods:
            per_level[v][level] = config.batch_size / seconds[v]
            print(f"{v:28s} level {level}: {per_level[v][level]:7.1f} images/s")
    result = {
        "preset": args.preset,
        "batch_size": config.batch_size,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
        "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
        "variants": {},
    }
    for v, levels in per_level.items():
        whole = whole_step(levels, built[v][0].settings.level_weights)
        result["variants"][v] = {
            "sets": rows[v][0],
            "accel": rows[v][1],
            "levels": levels,
            "whole_step_images_per_s": whole,
        }
        print(f"{v:28s} whole step (its level draws): {whole:.1f} images/s")
    base = result["variants"][args.variants[0]]["whole_step_images_per_s"]
    for v in list(rows)[1:]:
        ratio = result["variants"][v]["whole_step_images_per_s"] / base
        result["variants"][v]["speedup_over_first"] = ratio
        print(f"{v} is {ratio:.2f}x the speed of {args.variants[0]}")
    (HERE / args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
