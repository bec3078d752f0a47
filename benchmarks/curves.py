"""Learning curves of every system on emoji32: the comparison protocol at equal wall clock.

    python benchmarks/curves.py all    --budget 45 --points 15,45   # = train, eval per method
    python benchmarks/curves.py train  --budget 45 --points 15,45   # each method alone, chunked
    python benchmarks/curves.py eval   --points 15,45 --n 2000      # one JSON per row and point
    python benchmarks/curves.py same-n --n 200 --rows udpm-exact ...  # beside the n = 200 row
    python benchmarks/curves.py report --points 15,45               # CURVES.md + curves.png

Protocol (written once here and at the top of ``CURVES.md``):

- **Training**: every method of ``BASELINES`` from its own ``emoji32-cpu*`` preset (its
  paper's optimiser, loss and schedule; one U-Net family and size), the same data, alone on
  the machine for ``--budget`` minutes of recorded training time, in ``--chunk``-step pieces
  (``--stop-at`` of a run planned at its preset's length, so schedules do not depend on the
  chunking; a run whose schedules never read its length is open-ended, so that only the
  budget stops it; DDGAN's cosine decay is planned to end with the budget). Every chunk's
  checkpoint is kept. ``udpm-l1`` is UDPM with the L1 term alone
  at every level (no discriminator): the "samples wash out without the adversarial term"
  ablation. Latent diffusion is a system of two stages and gets one clock: its autoencoder
  trains first, for ``--autoencoder-minutes`` (10 of the 45), then the LDM for the rest,
  and its points are read on the sum (an LDM row at 15 minutes is 10 + 5).
- **Points**: at each of ``--points`` minutes, the newest checkpoint whose training time
  does not exceed it (steps, images seen and training FLOPs per image are recorded with it).
- **Evaluation**: n samples (seeds ``--seed``..) per row; FD, KID (100 subsets) and
  precision/recall (k = 3) in the shipped emoji32 feature network (never trained on)
  against all 3,781 images; the floor is n data images against the same 3,781 (it shares
  images with the reference, so it is a lower bound of what data can score, as a floor
  should be). ``--repeats-seeds`` repeats the sampling with other seeds for a spread.
- **Speed**: NFE, FLOPs per image, ms per image at batch 1 and 64, in the same run.

On a GPU the same commands run at real budgets (``--budget 600 --points 60,300,600``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import trilemma  # noqa: E402  (the rows, the held-out split and the budget helpers)

CURVES = trilemma.CACHE / "curves"
BASELINES = {**trilemma.BASELINES, "udpm-l1": "emoji32-cpu", "ddgan-2": "emoji32-cpu-ddgan"}
EXTRA_ARGS = {
    "udpm-l1": ["--set", "lambda_l1=[1.0,1.0,1.0]", "--set", "lambda_adv=[0.0,0.0,0.0]"],
    "ddgan-2": ["--set", "T=2"],  # Xiao et al. (2022) ablate T = 1, 2, 4, 8 on CIFAR-10
    "autoencoder": trilemma.TRAIN_ARGS["autoencoder"],
    "ldm": ["--autoencoder", str(CURVES / "run-autoencoder")],
}
# (row, method, sampler kwargs, n or None for --n): the trilemma rows, the L1-only ablation,
# DDIM-100 and DDGAN with T = 2 (its own run: T is part of what the generator learns).
ROWS = [
    *[(name, m, kw, None) for name, m, kw in trilemma.ROWS if not m.endswith("-shipped")],
    ("udpm-l1", "udpm-l1", {}, None),
    ("ddgan-2", "ddgan-2", {}, None),
    ("ddim-100", "ddpm", {"sampler": "ddim", "steps": 100, "eta": 0.0}, None),
    # DDPM's full chain costs 1000 calls per image: a smaller n, with its own floor.
    ("ddpm-ancestral-1000", "ddpm", {"sampler": "ancestral"}, 200),
]


def run_dir(method: str) -> Path:
    return CURVES / f"run-{method}"


def train_stage(args) -> None:
    for method, preset in BASELINES.items():
        if args.methods and method not in args.methods:
            continue
        if method == "ldm" and not (run_dir("autoencoder") / "config.yaml").exists():
            sys.exit("train the autoencoder first (it is listed before ldm)")
        budget = args.budget * 60
        if method == "autoencoder":
            budget = args.autoencoder_minutes * 60
        elif method == "ldm":
            budget -= autoencoder_minutes() * 60
        train_method(method, preset, budget, args.chunk)


def autoencoder_minutes() -> float:
    """Training minutes of latent diffusion's first stage (its newest checkpoint)."""
    return trilemma.train_seconds(run_dir("autoencoder")) / 60


def train_method(method: str, preset: str, budget_s: float | None, chunk: int) -> None:
    """Chunks of ``chunk`` steps until ``budget_s`` of training time (None: the planned run)."""
    from udpm.config import preset_config

    extra = ["--set", "sample_every=1000000", "--set", "keep=100000",
             "--set", f"checkpoint_every={chunk}", *EXTRA_ARGS.get(method, [])]  # fmt: skip
    config = preset_config(preset)
    settings, planned, open_ended = config.settings, config.steps, False
    if budget_s and settings.optim.decay == "cosine":
        planned = steps_in_budget(method, preset, budget_s, extra)
    elif budget_s and getattr(settings, "instance_noise_end", None) is None:
        # Nothing reads this run's length (constant lr after warm-up; UDPM's instance noise
        # decays per step): the budget alone ends it, not the preset's step count.
        planned, open_ended = OPEN_ENDED, True
    trilemma.train_in_chunks(method, preset, run_dir(method), planned, chunk, budget_s, extra,
                             open_ended)  # fmt: skip


OPEN_ENDED = 1_000_000  # the step target of a run that only its time budget ends


PROBE_SETS = ["--set", "checkpoint_every=10", "--set", "keep=10"]


def steps_in_budget(method: str, preset: str, budget_s: float, extra: list[str]) -> int:
    """A run's length when its schedule is tied to it (DDGAN's cosine decay to lr_min): the
    steps that ``budget_s`` allows at the speed of a 40-step probe (its first 10 not
    counted), so the decay ends with the budget as it ends with the paper's run. Fixed
    when the run starts (``config.yaml``) and kept by every resume."""
    import tempfile

    from udpm.checkpoint import read_meta
    from udpm.cli import main
    from udpm.train.rundir import read_saved_config

    if (run_dir(method) / "config.yaml").exists():
        return read_saved_config(run_dir(method)).steps
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        common = ["train", "--preset", preset, *trilemma.data_args(method), "--out", str(probe),
                  "--no-progress", *extra, *PROBE_SETS]  # fmt: skip
        for more in (["--steps", "40", "--stop-at", "10"], ["--resume"]):
            if main([*common, *more]):
                sys.exit(f"{method}: the speed probe failed")
        first = read_meta(probe / "checkpoints" / "model-0000010.safetensors")["train_seconds"]
        seconds_per_step = (trilemma.train_seconds(probe) - first) / 30
    steps = int(budget_s / seconds_per_step)
    print(f"{method}: {seconds_per_step:.2f} s/step in the probe: planned {steps} steps")
    return steps


def checkpoint_at(run: Path, minutes: float) -> Path | None:
    """The newest model file of ``run`` trained for at most ``minutes`` (None: none is)."""
    from udpm.checkpoint import read_meta

    files = sorted((run / "checkpoints").glob("model-*.safetensors"))
    within = [p for p in files if read_meta(p).get("train_seconds", 0) <= minutes * 60 + 1e-6]
    return within[-1] if within else None


def all_stage(args) -> None:
    """Each method of ``--methods`` (in that order; default all) trained, then its rows
    evaluated, before the next trains: evaluation never shares the cores with a training,
    and an interrupted session leaves every finished method complete."""
    for method in args.methods or list(BASELINES):
        train_stage(argparse.Namespace(**{**vars(args), "methods": [method]}))
        rows = [r[0] for r in ROWS if r[1] == method and (not args.rows or r[0] in args.rows)]
        if rows:
            eval_stage(argparse.Namespace(**{**vars(args), "rows": rows}))


def eval_stage(args) -> None:
    for name, method, kwargs, n_row in ROWS:
        if args.rows and name not in args.rows:
            continue
        for minutes in args.points:
            out = CURVES / f"row-{name}@{minutes:g}.json"
            if out.exists() and not args.force:
                continue
            stage1 = autoencoder_minutes() if method == "ldm" else 0.0  # one clock per system
            loaded = load_row(method, kwargs, minutes - stage1)
            if loaded is None:
                print(f"{name} @ {minutes:g} min: no checkpoint yet; skipped")
                continue
            path, pipe, sampler = loaded
            row = measure(pipe, sampler, n_row or args.n, args)
            row.update(row=name, method=method, point_minutes=minutes, checkpoint=str(path))
            row["train_flops_per_image"] = training_flops_per_image(method)
            if stage1:
                row["autoencoder_minutes"] = round(stage1, 2)
                row["train_minutes"] = round(row["train_minutes"] + stage1, 2)
            if method in trilemma.HELDOUT:  # its bound on the images it never trained on
                row.update(trilemma.likelihood_columns(pipe, args))
            out.write_text(json.dumps(row, indent=2))
            print(f"{name} @ {minutes:g} min: FD {row['fd']:.2f} R {row['recall']:.3f}")


def load_row(method: str, kwargs: dict, minutes: float):
    """``(checkpoint, pipeline, sampler options)`` of a row at ``minutes`` of its run, or None."""
    import udpm

    path = checkpoint_at(run_dir(method), minutes)
    if path is None:
        return None
    sampler = dict(kwargs)
    scalar = sampler.pop("scalar_posterior", False)
    return path, udpm.load(path, **({"scalar_posterior": True} if scalar else {})), sampler


def same_n_stage(args) -> None:
    """Score ``--rows`` at the last point with ``--n`` samples (no timing), into ``same-n/``:
    FD and recall move with n, so a row measured at a smaller n (the 1000-step chain) is
    set beside the others at its own n, not beside their n = 2,000 numbers."""
    minutes = max(args.points)
    for name, method, kwargs, _ in ROWS:
        out = CURVES / "same-n" / f"row-{name}@{minutes:g}-n{args.n}.json"
        if (args.rows and name not in args.rows) or (out.exists() and not args.force):
            continue
        stage1 = autoencoder_minutes() if method == "ldm" else 0.0
        loaded = load_row(method, kwargs, minutes - stage1)
        if loaded is None:
            continue
        path, pipe, sampler = loaded
        row = score(pipe, sampler, args.n, args.seed)
        row.update(row=name, n=args.n, k=3, point_minutes=minutes, checkpoint=str(path))
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(row, indent=2))
        print(f"{name} @ {minutes:g} min, n = {args.n}: FD {row['fd']:.2f} R {row['recall']:.3f}")


def measure(pipe, sampler: dict, n: int, args) -> dict:
    from udpm.eval.speed import benchmark

    cost = benchmark(pipe, repeats=args.timing_repeats, batches=(1, 64), **sampler)
    scores = [score(pipe, sampler, n, args.seed + k * n) for k in range(args.repeats_seeds)]
    meta = pipe.meta
    row = {
        **{k: cost[k] for k in ("nfe", "flops_per_image", "ms_per_image_batch1")},
        "ms_per_image_batch64": cost["ms_per_image_batch64"],
        **{k: statistics.mean(s[k] for s in scores) for k in scores[0] if k != "seed"},
        "spread": {k: [s[k] for s in scores] for k in ("fd", "recall")},
        "seeds": [s["seed"] for s in scores],
        "timing_repeats": args.timing_repeats,
        "n": n,
        "k": 3,
        "train_minutes": round(meta.get("train_seconds", 0) / 60, 2),
        "train_steps": meta.get("step"),
        "images_seen": meta.get("images_seen"),
        "sampler_options": pipe.sampler_options(**sampler),
        "git_commit": trilemma.git_commit(),
        "machine": machine(),
    }
    return row


def score(pipe, sampler: dict, n: int, seed: int) -> dict:
    from udpm.eval import compute_metrics
    from udpm.eval.reference import dataset_identity

    t0 = time.perf_counter()
    fake = pipe.sample(n, seed=seed, batch_size=256, **sampler)
    r = compute_metrics(fake, real_images(), reference_key=dataset_identity("emoji32"),
                        progress=False)  # fmt: skip
    keys = ("fd", "kid_mean", "kid_std", "precision", "recall")
    return {**{k: r[k] for k in keys}, "seed": seed, "sampling_s": time.perf_counter() - t0}


class FlopCount(TorchDispatchMode):
    """``FlopCounterMode``'s formulas without its module tracker, whose backward hooks refuse
    ``autograd.grad`` on a leaf input (R1's gradient penalty)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **(kwargs or {}), out_val=out)
        return out


def training_flops_per_image(method: str) -> float:
    """FLOPs of the method's training step per image, counted (:class:`FlopCount`: every
    matmul and convolution of G's and D's forward and backward passes, R1's double backward
    included) over one period of its steps: every UDPM level, every lazy-R1 step. Built
    from the run's own config with random weights (FLOPs do not depend on them). Cached."""
    cache = CURVES / f"train-flops-{method}.json"
    if cache.exists():
        return json.loads(cache.read_text())["train_flops_per_image"]
    from udpm.methods import get_method
    from udpm.train.rundir import read_saved_config

    config = read_saved_config(run_dir(method))
    torch.manual_seed(0)
    trainer = get_method(config.method)(config, "cpu")
    s = config.settings
    period = math.lcm(getattr(s, "lazy_r1", 1), getattr(s, "r1_every", 1))
    levels = trainer.process.levels if hasattr(trainer, "draw_level") else 1
    steps = math.lcm(period, levels)
    cycle = iter(range(steps))
    if levels > 1:  # UDPM: each level once per period of ``levels`` steps
        trainer.draw_level = lambda: next(cycle) % levels + 1
    x0 = real_images()[: config.batch_size]

    with FlopCount() as counter:
        for i in range(steps):
            trainer.step(x0, None, i)
    flops = counter.total / (steps * len(x0))
    cache.write_text(json.dumps({"train_flops_per_image": flops, "steps_counted": steps}))
    return flops


@functools.cache
def real_images() -> torch.Tensor:
    from pretrained_quality import real_images as load

    return load()


def floor(n: int) -> dict:
    """n data images (a seeded permutation) against the same reference as every row."""
    from udpm.eval import compute_metrics
    from udpm.eval.reference import dataset_identity

    real = real_images()
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:n]
    r = compute_metrics(real[perm], real, reference_key=dataset_identity("emoji32"),
                        progress=False)  # fmt: skip
    return {k: r[k] for k in ("fd", "kid_mean", "precision", "recall")} | {"n": n}


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    stage_help = ("all: train each method, then evaluate its rows, then the next; same-n: "
                  "score --rows at the last point with --n samples, untimed")  # fmt: skip
    p.add_argument("stage", choices=["all", "train", "eval", "same-n", "report"], help=stage_help)
    p.add_argument("--budget", type=float, default=45.0, help="training minutes per method")
    p.add_argument("--autoencoder-minutes", type=float, default=10.0,
                   help="latent diffusion's first stage, counted in its --budget")  # fmt: skip
    p.add_argument("--points", default="15,45", help="minutes at which to evaluate, e.g. 15,45")
    p.add_argument("--chunk", type=int, default=100, help="steps per chunk (checkpoint spacing)")
    p.add_argument("--methods", nargs="*", choices=list(BASELINES), help="train: only these")
    p.add_argument("--rows", nargs="*", choices=[r[0] for r in ROWS], help="eval: only these")
    p.add_argument("--n", type=int, default=2000, help="samples per row")
    p.add_argument("--seed", type=int, default=0, help="first sampling seed")
    p.add_argument("--repeats-seeds", type=int, default=1, help="sample seed sets per row")
    p.add_argument("--timing-repeats", type=int, default=3, help="timing repeats per batch")
    p.add_argument("--force", action="store_true", help="re-evaluate cached rows")
    args = p.parse_args()
    args.points = [float(x) for x in args.points.split(",")]
    CURVES.mkdir(parents=True, exist_ok=True)
    if args.stage == "report":
        from curves_report import report_stage

        return report_stage(args)
    stages = {"all": all_stage, "train": train_stage, "eval": eval_stage, "same-n": same_n_stage}
    stages[args.stage](args)


if __name__ == "__main__":
    main()
