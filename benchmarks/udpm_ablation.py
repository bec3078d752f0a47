"""UDPM recipe ablation on emoji32: short equal-step runs, each scored at n = 2,000.

    python benchmarks/udpm_ablation.py train  --budget-steps 1500 --parallel 2
    python benchmarks/udpm_ablation.py eval
    python benchmarks/udpm_ablation.py report

Every variant starts from the ``emoji32-cpu`` preset (the recipe of the 0.1.0 shipped
model) and changes the settings named in ``VARIANTS``; all are planned as runs of
``--plan-steps`` (13,000: the 0.1.0 model's length; the annealed instance noise reads it)
and stopped at ``--budget-steps`` with ``--stop-at``, same seed and data. The winner is
continued to the planned length with ``train --variants NAME --budget-steps 13000``: the
same run, so the shipped model's first steps are the ablation's. Every 500th checkpoint is
kept for the curve (``pretrained_quality.py curve --history RUN/checkpoints``). With
``--processes P`` a run trains under torchrun, P processes of ``--threads`` each, on the
same global batch.

``eval`` scores each run's last EMA checkpoint like ``pretrained_quality.py``: FD, KID,
precision and recall (k = 3) of 2,000 samples (seeds 0..1999) against all 3,781 emoji in
the shipped emoji32 feature network (never used for training), plus the diversity ratios
that training logs. ``report`` writes ``benchmarks/ABLATION.md`` and ``ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache" / "ablation"

# The 0.1.0 recipe, spelled out so that the variants do not move when the preset does.
OLD = {
    "instance_noise_end": "null",
    "d_loss": "sum",
    "instance_noise_every": "200",
    "d_eval_in_g_step": "false",
    "r1_every": "1",
    "lambda_fm": "[0.0,0.0,0.0]",
    "level_weights": "null",
    "lambda_ms": "[0.0,0.0,0.0]",
}


def _over_old(**changes) -> list[str]:
    return [f"{k}={v}" for k, v in {**OLD, **changes}.items()]


_AUTHORS_D = dict(instance_noise_end="0.001", d_loss="mean", d_eval_in_g_step="true")
# The shipped model's two changes: the bounded mode-seeking term at the top, no dropout in D.
_MSB_NODROP = {"lambda_ms": "[0.0,0.0,1.0]", "ms_bounded": "true", "discriminator.dropout": "0.0"}
# name -> (what changes, --set assignments over emoji32-cpu). Each builds on the one above
# unless it says otherwise, so the table reads as a path from the old recipe to the new.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "0.1.0": ("the emoji32-cpu preset as shipped in 0.1.0", _over_old()),
    "anneal": (
        "instance noise annealed 0.4 -> 0.001 over the run (not 0.99 every 200 steps)",
        _over_old(instance_noise_end="0.001"),
    ),
    "anneal+authors-d": (
        "anneal + D's loss as the authors (½ on the GAN terms) + D in eval mode for G's step",
        _over_old(**_AUTHORS_D),
    ),
    "anneal+authors-d+lazy": (
        "anneal+authors-d + lazy R1 every 16 steps (weighted by 16)",
        _over_old(**_AUTHORS_D, r1_every="16"),
    ),
    "anneal+authors-d+lazy+fm": (
        "anneal+authors-d+lazy + feature matching in D's features at levels 1-2 (weight 1)",
        _over_old(**_AUTHORS_D, r1_every="16", lambda_fm="[1.0,1.0,0.0]"),
    ),
    # Added after the shipped run of anneal+authors-d ended worse than 0.1.0 at 13k steps:
    # the old recipe with the two cheap-step / perceptual changes, trained to 13k at once.
    "0.1.0+lazy+fm": (
        "the 0.1.0 recipe + lazy R1 every 16 steps + feature matching at levels 1-2 (weight 1)",
        _over_old(r1_every="16", lambda_fm="[1.0,1.0,0.0]"),
    ),
    "anneal+authors-d+lazy+top": (
        "anneal+authors-d+lazy + the top level drawn half the time (weights ¼, ¼, ½)",
        _over_old(**_AUTHORS_D, r1_every="16", level_weights="[0.25,0.25,0.5]"),
    ),
    # Added after benchmarks/top_level.py: the top level alone collapses under the 0.1.0
    # recipe, and the mode-seeking term (MSGAN) spread it out most there.
    "0.1.0+ms": (
        "the 0.1.0 recipe + the mode-seeking term at the top level (weight 1)",
        _over_old(lambda_ms="[0.0,0.0,1.0]"),
    ),
    # Added after the probe's fourth round: the term bounded at the data's pair distance
    # spread the top level alike from both training seeds, where the plain term overshot,
    # and with D's dropout off it had the probe's best FD from both seeds (TOP_LEVEL.md).
    "0.1.0+msb+nodrop": (
        "the 0.1.0 recipe + the bounded mode-seeking term at the top level (weight 1) + no "
        "dropout in D",
        _over_old(**_MSB_NODROP),
    ),
    # Added for the step-cost target: the cheaper D step on the recipe that shipped.
    "0.1.0+msb+nodrop+lazy": (
        "0.1.0+msb+nodrop + lazy R1 every 16 steps (weighted by 16)",
        _over_old(**_MSB_NODROP, r1_every="16"),
    ),
    # Added for the step-cost target after lazy R1 failed its rule: fewer draws of level 1,
    # whose step costs about 3x level 3's (train_speed.json), more of the top level, where the
    # data's diversity is decided (TOP_LEVEL.md). A cheaper step, not a cheaper network.
    "0.1.0+msb+nodrop+lw": (
        "0.1.0+msb+nodrop + levels drawn with probabilities 0.1, 0.3, 0.6 (not ⅓ each)",
        _over_old(**_MSB_NODROP, level_weights="[0.1,0.3,0.6]"),
    ),
}


# Fixed before the results were seen: which variant the shipped run continues.
WINNER_RULE = (
    "The shipped run continues the variant with the lowest FD at the ablation budget; "
    "variants within 10% of that FD count as tied, and a tie goes to the higher recall, "
    "then to the faster training step."
)

# Bookkeeping only (no effect on training): keep every checkpoint, one per 500 steps.
BOOKKEEPING = ["keep=100", "checkpoint_every=500"]


def udpm_cli(processes: int = 1) -> list[str]:
    """The command that runs ``udpm``: in this process's Python, under torchrun if
    ``processes`` > 1 (gloo DDP on a CPU)."""
    if processes == 1:
        return [sys.executable, "-m", "udpm.cli"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*torchrun, f"--nproc_per_node={processes}", "-m", "udpm.cli"]


def train_command(name: str, plan: int, stop: int, threads: int, processes: int = 1) -> list[str]:
    """``udpm train`` for one variant; with ``processes`` > 1 under torchrun (gloo DDP,
    the same global batch: see ``train_processes.py`` for why that trains the same model)."""
    sets = [*VARIANTS[name][1], *BOOKKEEPING, f"threads={threads}"]
    cmd = [*udpm_cli(processes), "train", "--preset", "emoji32-cpu"]
    cmd += ["--out", str(CACHE / name), "--steps", str(plan), "--stop-at", str(stop)]
    cmd += ["--auto-resume", "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_logged(name: str, cmd: list[str], cache: Path) -> int:
    """Run one training command with its output appended to ``cache/NAME.log``."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.log", "a") as log:
        print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    print(f"[{name}] exit {rc}", flush=True)
    return rc


def train_all(names: list[str], command, parallel: int) -> None:
    """``command(name)`` for each name, ``parallel`` at once; exit non-zero if any failed."""
    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(command, names))
    if any(codes):
        sys.exit(f"some runs failed: {dict(zip(names, codes))}")


def train_stage(args) -> None:
    def one(name: str) -> int:
        cmd = train_command(name, args.plan_steps, args.budget_steps, args.threads, args.processes)
        return run_logged(name, cmd, CACHE)

    train_all(args.variants or list(VARIANTS), one, args.parallel)


def eval_one(name: str, real, n: int, budget: int) -> dict:
    import torch

    import udpm
    from udpm.eval import compute_metrics
    from udpm.eval.diversity import diversity_ratios
    from udpm.eval.reference import dataset_identity

    pipe = udpm.load(CACHE / name / "checkpoints" / f"model-{budget:07d}.safetensors")
    fake = pipe.sample(n, seed=0, batch_size=500)
    r = compute_metrics(fake, real, reference_key=dataset_identity("emoji32"), progress=False)
    L = pipe.process.levels
    gen = torch.Generator().manual_seed(0)
    sub = real[torch.randperm(len(real), generator=gen)[:n]]
    div = diversity_ratios(*(pipe.process.degrade(x, L - 1) for x in (fake, sub)))
    metrics = [json.loads(x) for x in (CACHE / name / "metrics.jsonl").read_text().splitlines()]
    return {
        "variant": name,
        "changes": VARIANTS[name][0],
        "sets": VARIANTS[name][1],
        "step": pipe.meta["step"],
        "train_minutes": round(pipe.meta.get("train_seconds", 0) / 60, 1),
        "images_per_s": _mean_rate([m for m in metrics if m.get("step", 0) <= budget]),
        "fd": r["fd"],
        "kid": [r["kid_mean"], r["kid_std"]] if "kid_mean" in r else None,
        "precision": r["precision"],
        "recall": r["recall"],
        **{f"div_{k}": v for k, v in div.items()},
        "n": n,
        "n_reference": r["n_real"],
        "k": 3,
        "sample_seeds": f"0..{n - 1}",
        "feature_net_hash": r["feature_net_hash"],
    }


def _mean_rate(metrics: list[dict]) -> float | None:
    rates = [m["img_per_s"] for m in metrics if m.get("img_per_s")]
    return round(sum(rates) / len(rates), 1) if rates else None


def eval_stage(args) -> None:
    sys.path.insert(0, str(HERE))
    from pretrained_quality import real_images

    from udpm.checkpoint import read_meta, resolve_model_file

    real = real_images()
    for name in args.variants or list(VARIANTS):
        out = CACHE / f"row-{name}.json"
        if out.exists() and not args.force:
            continue
        step = read_meta(resolve_model_file(CACHE / name))["step"]
        if step < args.budget_steps:  # still training (or stopped early): not comparable
            print(f"{name}: at step {step}, not {args.budget_steps}; skipped")
            continue
        row = eval_one(name, real, args.n, args.budget_steps)
        out.write_text(json.dumps(row, indent=2))
        print(f"{name}: FD {row['fd']:.2f} P {row['precision']:.3f} R {row['recall']:.3f}")


def cached_or_committed(name: str) -> dict | None:
    """A variant's row: this machine's cached one, else the one in ``ablation.json``.

    The cache is not in git, so a later session re-scores only its new variants and the
    rows measured earlier stay in the table.
    """
    cached = CACHE / f"row-{name}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    committed = HERE / "ablation.json"
    rows = json.loads(committed.read_text())["rows"] if committed.exists() else []
    return next((r for r in rows if r["variant"] == name), None)


def report_stage(args) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from pretrained_quality import floor, real_images

    rows = [row for n in VARIANTS if (row := cached_or_committed(n))]
    fl = floor(real_images())
    machine = f"{platform.machine()}, torch {torch.__version__}, {os.cpu_count()} cores"
    (HERE / "ablation.json").write_text(
        json.dumps(
            {"machine": machine, "floor": fl, "rows": rows, "command": args.command}, indent=2
        )
    )
    (HERE / "ABLATION.md").write_text("\n".join(markdown(rows, fl, machine, args)) + "\n")
    print((HERE / "ABLATION.md").read_text())


def markdown(rows, fl, machine, args) -> list[str]:
    def kid(r):
        k = r.get("kid")
        return (
            "–"
            if k is None
            else f"{k[0] * 1e3:.1f} ± {k[1] * 1e3:.1f}"
            if isinstance(k, (list, tuple))
            else f"{k * 1e3:.1f}"
        )

    out = [
        "# UDPM recipe ablation (emoji32-cpu, equal steps)",
        "",
        f"Machine: {machine}. Commands: `{args.command}` (see the script's docstring).",
        f"Every run: emoji32-cpu, seed 0, batch 32, {rows[0]['step'] if rows else '?'} steps. "
        f"Scores: n = {rows[0]['n'] if rows else '?'} samples (seeds 0..n-1) against all "
        "3,781 emoji in the shipped emoji32 feature network; precision/recall with k = 3. "
        f"Floor (two random halves of the data): FD {fl['fd']:.2f}, "
        f"precision {fl['precision']:.3f}, recall {fl['recall']:.3f}.",
        "`top std` and `NN ratio` are the diversity ratios training logs (8-px level's "
        "per-pixel std and median nearest-neighbour distance, samples over data; 1 = data).",
        "img/s is the mean of the logged training rate (runs shared the 2 cores in pairs, "
        "so compare it only between rows, not with other tables).",
        "",
        WINNER_RULE,
        "",
        "| variant | what changes | FD ↓ | FD / floor | KID×1e3 ↓ | precision | recall "
        "| top std | NN ratio | img/s | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['variant']} | {r['changes']} | {r['fd']:.2f} | {r['fd'] / fl['fd']:.1f} "
            f"| {kid(r)} | {r['precision']:.3f} | {r['recall']:.3f} "
            f"| {r.get('div_top_std_ratio', float('nan')):.2f} "
            f"| {r.get('div_nn_ratio', float('nan')):.2f} | {r['images_per_s']} "
            f"| {r['train_minutes']} |"
        )
    reading = HERE / "ablation_reading.md"  # hand-written, kept beside the generated tables
    return out + speed_markdown() + (["", reading.read_text().rstrip()] if reading.exists() else [])


def speed_markdown() -> list[str]:
    """The step cost per level of the variants, from ``train_speed.py`` (one run, alternated),
    then the ceilings run by its ``--bounds`` (the shipped recipe with a part removed)."""
    out = speed_table(HERE / "train_speed.json", "Step cost", "")
    return out + speed_table(
        HERE / "train_speed_bounds.json",
        "Step-cost ceilings",
        "Rows marked `@no-r1` and `@no-adv` are not recipes: the first variant with R1, or its "
        "whole adversarial part (D's step and G's adversarial term), removed, so no lever on "
        "that part can make the step faster than they are. ",
    )


def speed_table(path: Path, title: str, preface: str) -> list[str]:
    if not path.exists():
        return []
    speed = json.loads(path.read_text())
    variants = speed.get("variants", {})
    if not variants:
        return []
    first = next(iter(variants))
    out = [
        "",
        f"## {title}",
        "",
        f"{preface}`{speed['command']}` on {speed['machine']}, batch {speed['batch_size']}, "
        "the machine otherwise idle; the variants' steps alternated one by one in one run, "
        "mean step time per level (so lazy R1's dearer steps count); the whole step weighs the "
        "levels as the variant draws them. Images per second, higher is faster:",
        "",
        f"| variant | level 1 | level 2 | level 3 | whole step (its level draws) | × {first} |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        lv = v["levels"]
        ratio = v.get("speedup_over_first", 1.0)
        out.append(
            f"| {name} | {lv['1']:.0f} | {lv['2']:.0f} | {lv['3']:.0f} "
            f"| {v['whole_step_images_per_s']:.0f} | {ratio:.2f} |"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stage", choices=["train", "eval", "report"])
    p.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="default: all")
    p.add_argument(
        "--budget-steps",
        type=int,
        default=1500,
        help="stop each run here (train); eval skips runs short of it",
    )
    p.add_argument("--plan-steps", type=int, default=13000, help="planned run length (train)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once (train)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (train)")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes per run under torchrun, one global batch (train)",
    )
    p.add_argument("--n", type=int, default=2000, help="samples per row (eval)")
    p.add_argument("--force", action="store_true", help="re-evaluate cached rows (eval)")
    args = p.parse_args()
    args.command = "python benchmarks/udpm_ablation.py " + " ".join(sys.argv[1:])
    {"train": train_stage, "eval": eval_stage, "report": report_stage}[args.stage](args)


if __name__ == "__main__":
    main()
