"""The trilemma benchmark on emoji32: quality, diversity and sampling cost, side by side.

Every method uses the same data, the same U-Net family and size (the emoji32-cpu presets),
the same wall-clock training budget on this CPU, the same metrics and the same sample count.
It runs in stages so that it fits in sessions; each stage caches what it made:

    python benchmarks/trilemma.py train  --budget-min 15      # baselines, chunked + --resume
    python benchmarks/trilemma.py eval   --n 500              # one JSON per row, cached
    python benchmarks/trilemma.py report                      # RESULTS.md + trilemma.png

The budget-matched UDPM rows come from ``cache/run-udpm`` (trained by the train stage like
the baselines); the ``udpm-shipped`` rows use the newest file of ``--udpm-history``, the
longer-trained shipped model, and say how long it trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
# Every method trains from scratch here, alone on the machine, for the same budget.
BASELINES = {
    "udpm": "emoji32-cpu",
    "ddpm": "emoji32-cpu-ddpm",
    "simple": "emoji32-cpu-simple",
    "ddgan": "emoji32-cpu-ddgan",
    "vdm": "emoji32-cpu-vdm",
    # Latent diffusion trains in two stages: the autoencoder first, then the LDM on it.
    "autoencoder": "emoji32-cpu-ae",
    "ldm": "emoji32-cpu-ldm",
}
# Likelihood models train without emoji32's held-out 10% (udpm.eval.heldout: the last 10% of
# a permutation seeded 0, 379 images) and report their bound on it.
HELDOUT = {"vdm"}
# Models with a bound here: their rows get a bpd column on the same held-out images (DDPM's
# run trains on all of emoji32, so for it those images are not unseen; its cell says so).
LIKELIHOOD = HELDOUT | {"ddpm"}
BPD_TIME_SAMPLES = 8
# Why a row's training budget is what it is, where it is a step budget (shared machine).
BUDGET_NOTES = {
    "ddpm": "DDPM trained for 750 steps, the step count its 0.1.0 run reached in 8.5 idle "
    "minutes, now with its own paper's optimiser (Adam (0.9, 0.999), clip 1) and sampled with "
    "x̂₀ clipped to [-1, 1] (the framework issue); the machine was shared while it trained "
    "and was timed (load average 4-7), so its minutes are wall time under that load and its "
    "ms/image is not comparable with the other rows' (NFE and FLOPs are). The 0.1.0 rows it "
    "replaces (Adam (0.5, 0.9), no clipping, same 750 steps) read FD 160.9 (DDIM-10), 253.6 "
    "(DDIM-50) and 38.5 (ancestral-50, recall 0.44); the `-unclipped` rows sample the new "
    "model without clipping, so clipping's and the optimiser's shares can be told apart.",
    "ddgan": "DDGAN trained for 500 steps, planned as a 500-step run (its cosine decay to 1e-5 "
    "ends there) and trained in two chunks with `--stop-at`: about the 8 idle minutes the "
    "0.1.0 rows had, since a DDGAN step costs about 3x a UDPM step per image here (44-45 "
    "img/s alone on the machine in its first 100 steps, against UDPM's 139 in "
    "`benchmarks/train_speed.json`). Its minutes are wall time with two other trainings "
    "sharing the 2 cores (5-17 img/s after step 100), so they overstate an idle machine's.",
    "vdm": "VDM trained for 750 steps: the DDPM row's budget (750 steps in its 8.5 idle "
    "minutes), because a VDM step measured as costly as a DDPM step (batch 32, side by side "
    "on this machine: 2.1 s and 2.1 s under the same load), and in steps because the "
    "machine was shared while it trained (its minutes are wall time under that load).",
}
HELD_OUT = 400  # the autoencoder trains without emoji32's last 400 images; PSNR is on them
EMOJI32_IMAGES = 3781
TRAIN_ARGS = {
    "autoencoder": ["--set", f"max_images={EMOJI32_IMAGES - HELD_OUT}"],
    "ldm": ["--autoencoder", str(CACHE / "run-autoencoder")],
}
# (row name, method, sampler kwargs) — the rows of the table.
ROWS = [
    ("udpm-exact", "udpm", {}),
    ("udpm-scalar", "udpm", {"scalar_posterior": True}),
    ("ddim-10", "ddpm", {"sampler": "ddim", "steps": 10, "eta": 0.0}),
    ("ddim-50", "ddpm", {"sampler": "ddim", "steps": 50, "eta": 0.0}),
    ("ddpm-ancestral-50", "ddpm", {"sampler": "ancestral", "steps": 50}),
    # The same DDPM model without x̂₀ clipping: what clipping itself changes (framework issue).
    ("ddim-10-unclipped", "ddpm", {"sampler": "ddim", "steps": 10, "eta": 0.0, "clip_x0": False}),
    (
        "ddpm-ancestral-50-unclipped",
        "ddpm",
        {"sampler": "ancestral", "steps": 50, "clip_x0": False},
    ),
    ("simple-32", "simple", {"steps": 32}),
    ("ddgan-4", "ddgan", {}),  # T = 4 generator calls, posterior sampling
    ("vdm-ancestral-50", "vdm", {"steps": 50}),
    ("ldm-ancestral-50", "ldm", {"sampler": "ancestral", "steps": 50}),
    ("ldm-ddim-50", "ldm", {"sampler": "ddim", "steps": 50, "eta": 0.0}),
    # Not budget-matched: the shipped model, trained for longer (its minutes are listed).
    ("udpm-shipped", "udpm-shipped", {}),
    ("udpm-shipped-scalar", "udpm-shipped", {"scalar_posterior": True}),
]


def git_commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True
        ).strip()
    except Exception:
        return "unknown"


def train_seconds(run: Path) -> float:
    from udpm.checkpoint import read_meta, resolve_model_file

    if not (run / "config.yaml").exists():
        return 0.0
    return float(read_meta(resolve_model_file(run)).get("train_seconds", 0.0))


def heldout_split() -> tuple[Path, Path]:
    """``(train .npz, held-out .npz)`` of emoji32, written once into the cache."""
    from udpm.eval.heldout import write_split

    return write_split("emoji32", CACHE / "split")


def data_args(method: str) -> list[str]:
    return ["--data", str(heldout_split()[0])] if method in HELDOUT else []


def train_stage(args) -> None:
    """Train each baseline in chunks (``--stop-at``, then ``--resume``) until its budget is spent.

    The run's planned length (``--steps``) is set once: the step budget, or the preset's
    length for a minute budget, so warm-up and cosine decay do not depend on the chunking.
    """
    for method, preset in BASELINES.items():
        if not args.methods or method in args.methods:
            train_baseline(method, preset, args)


def step_of(run: Path) -> int:
    from udpm.checkpoint import read_meta, resolve_model_file

    return read_meta(resolve_model_file(run))["step"] if (run / "config.yaml").exists() else 0


def train_baseline(method: str, preset: str, args) -> None:
    from udpm.config import preset_config

    planned = args.budget_steps or preset_config(preset).steps
    # A step budget is fair on a shared machine; minutes only alone.
    budget_s = None if args.budget_steps else args.budget_min * 60
    train_in_chunks(method, preset, CACHE / f"run-{method}", planned, args.chunk, budget_s,
                    ["--set", "sample_every=1000000", *TRAIN_ARGS.get(method, [])])  # fmt: skip


def train_in_chunks(method, preset, run: Path, planned, chunk, budget_s, extra, open_ended=False):
    """``--stop-at`` chunks of a run planned at ``planned`` steps, until it reaches them or
    ``budget_s`` seconds of recorded training time (None: no time budget). ``extra``: flags
    of every call (a resume refuses settings that differ from the run's). ``open_ended``:
    every resume restates ``--steps planned`` (only for a run whose schedules never read
    its length, where raising the target changes nothing but where it stops)."""
    from udpm.cli import main

    common = ["train", "--preset", preset, *data_args(method), "--out", str(run),
              "--no-progress", *extra]  # fmt: skip
    while step_of(run) < planned and (budget_s is None or train_seconds(run) < budget_s):
        stop = min(step_of(run) + chunk, planned)
        print(f"{method}: {train_seconds(run) / 60:.1f} min so far, training to {stop}/{planned}")
        more = ["--resume"] if (run / "config.yaml").exists() else ["--steps", str(planned)]
        if open_ended and more == ["--resume"]:
            more += ["--steps", str(planned)]
        code = main([*common, *more, "--stop-at", str(stop)])
        if code:
            sys.exit(code)


def udpm_checkpoint(args) -> Path:
    """The model file of the UDPM run whose training time is closest to the budget."""
    from udpm.checkpoint import read_meta

    if args.udpm_checkpoint:
        return Path(args.udpm_checkpoint)
    if (CACHE / "run-udpm").is_dir():  # trained by the train stage under the same rules
        return CACHE / "run-udpm"
    files = sorted(Path(args.udpm_history).glob("model-*.safetensors"))
    if not files:
        sys.exit(f"no UDPM model files in {args.udpm_history}")
    budget = args.budget_min * 60
    return min(files, key=lambda p: abs(read_meta(p).get("train_seconds", 0) - budget))


def load_row(args, method: str, kwargs: dict):
    import udpm

    if method == "udpm-shipped":
        path = sorted(Path(args.udpm_history).glob("model-*.safetensors"))[-1]
    else:
        path = udpm_checkpoint(args) if method == "udpm" else CACHE / f"run-{method}"
    sampler = dict(kwargs)
    changes = {"scalar_posterior": True} if sampler.pop("scalar_posterior", False) else {}
    return udpm.load(path, **changes), sampler


def eval_stage(args) -> None:
    from udpm.eval import compute_metrics
    from udpm.eval.reference import dataset_identity
    from udpm.eval.speed import benchmark

    real = None
    for name, method, kwargs in ROWS:
        if args.rows and name not in args.rows:
            continue
        out = CACHE / f"row-{name}.json"
        if out.exists() and not args.force:
            print(f"{name}: cached")
            continue
        try:
            pipe, sampler = load_row(args, method, kwargs)
        except Exception as exc:  # a baseline not trained yet: skip its row
            print(f"{name}: skipped ({exc})")
            continue
        cost = benchmark(pipe, repeats=args.repeats, batches=(64,), **sampler)
        if method.startswith("udpm"):
            cost.update(udpm_batch1(pipe, args, sampler))
        t0 = time.perf_counter()
        fake = pipe.sample(args.n, seed=args.seed, batch_size=256, progress=True, **sampler)
        sampling_s = time.perf_counter() - t0
        if real is None:
            from udpm.data import load_source
            from udpm.images import from_uint8

            real = from_uint8(load_source("emoji32").images)
        quality = compute_metrics(
            fake, real, reference_key=dataset_identity("emoji32"), progress=False
        )
        meta = pipe.meta
        row = {
            "row": name,
            "method": method,
            "sampler": describe_sampler(method, kwargs),
            "nfe": cost["nfe"],
            "flops_per_image": cost["flops_per_image"],
            "ms_per_image_batch64": cost["ms_per_image_batch64"],
            "sampler_overhead_fraction": cost["sampler_overhead_fraction"],
            "ms_per_image_batch1": cost.get("ms_per_image_batch1"),
            "fd": quality["fd"],
            "precision": quality["precision"],
            "recall": quality["recall"],
            "kid_mean": quality["kid_mean"],
            "n": args.n,
            "n_reference": quality["n_real"],
            "feature_net_hash": quality["feature_net_hash"],
            "train_minutes": round(meta.get("train_seconds", 0) / 60, 1),
            "train_steps": meta.get("step"),
            "images_seen": meta.get("images_seen"),
            "checkpoint": meta.get("path"),
            "sampling_seconds_total": round(sampling_s, 1),
            "sampler_options": pipe.sampler_options(**sampler),
            "optimiser": dataclasses.asdict(pipe.config.optim),
            "git_commit": git_commit(),
            "torch_threads": torch.get_num_threads(),
        }
        if method in LIKELIHOOD:
            row.update(likelihood_columns(pipe, args), bpd_heldout=method in HELDOUT)
        if getattr(pipe.config.settings, "autoencoder", None):  # latent diffusion's stage 1
            row["stage1"] = stage1_training(pipe.config.settings.autoencoder)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row, indent=2))
        print(f"{name}: FD {row['fd']:.2f} P {row['precision']:.2f} R {row['recall']:.2f}")
    floor_stage(args)
    autoencoder_stage(args)


def stage1_training(path) -> dict:
    from udpm.checkpoint import read_meta

    meta = read_meta(Path(path))
    return {
        "train_minutes": round(meta.get("train_seconds", 0) / 60, 1),
        "train_steps": meta["step"],
    }


def autoencoder_stage(args) -> None:
    """Reconstruction PSNR of latent diffusion's autoencoder on the held-out images."""
    import udpm
    from udpm.data import load_source
    from udpm.eval.reconstruction import reconstruction_psnr
    from udpm.images import from_uint8

    out, run = CACHE / "autoencoder.json", CACHE / "run-autoencoder"
    if not run.is_dir() or (out.exists() and not args.force):
        return
    pipe = udpm.load(run)
    images = from_uint8(load_source("emoji32").images)
    seen = pipe.config.max_images
    if not seen or seen >= len(images):
        print(f"autoencoder: skipped ({run} was trained on every image; nothing is held out)")
        return
    result = {
        "held_out": reconstruction_psnr(pipe.network, images[seen:]),
        "train": reconstruction_psnr(pipe.network, images[:HELD_OUT]),
        "latent_shape": list(pipe.network.latent_shape(pipe.image_shape)),
        "parameters": sum(p.numel() for p in pipe.network.parameters()),
        "checkpoint": pipe.meta.get("path"),
        **stage1_training(pipe.meta["path"]),
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"autoencoder: held-out PSNR {result['held_out']['psnr_db']:.2f} dB")


def likelihood_columns(pipe, args) -> dict:
    """The bound on the held-out images, in bits per dimension, with its terms."""
    from udpm.eval.likelihood import evaluate_bpd_source

    result = evaluate_bpd_source(
        pipe, str(heldout_split()[1]), time_samples=BPD_TIME_SAMPLES, seed=args.seed
    )
    keys = ("bpd", "bpd_stderr", "prior_bpd", "reconstruction_bpd", "diffusion_bpd")
    return {
        **{k: result[k] for k in keys},
        "bpd_images": result["n_images"],
        "bpd_time_samples": result["time_samples"],
        "bpd_bound": result["bound"],
    }


def udpm_batch1(pipe, args, sampler) -> dict:
    from udpm.eval.speed import time_sampling

    t = time_sampling(pipe, 1, repeats=max(args.repeats, 5), **sampler)
    return {"ms_per_image_batch1": t["ms_per_image"]}


def floor_stage(args) -> None:
    """FD between two random halves of emoji32 at the same sample count: the floor."""
    from udpm.data import load_source
    from udpm.eval import compute_metrics
    from udpm.images import from_uint8

    out = CACHE / f"floor-{args.n}.json"
    if out.exists() and not args.force:
        return
    images = from_uint8(load_source("emoji32").images)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    half = len(images) // 2
    fake, real = images[perm[: min(args.n, half)]], images[perm[half:]]
    result = compute_metrics(fake, real, progress=False)
    out.write_text(
        json.dumps(
            {
                "fd": result["fd"],
                "precision": result["precision"],
                "recall": result["recall"],
                "n": len(fake),
                "n_reference": len(real),
            },
            indent=2,
        )
    )


def describe_sampler(method: str, kwargs: dict) -> str:
    if method.startswith("udpm"):
        scalar = kwargs.get("scalar_posterior")
        return "scalar posterior (authors')" if scalar else "exact posterior"
    if method == "ddgan":
        return "G(x_t, z, t) + posterior"
    if method == "vdm":
        return "ancestral, decoded to 8 bits"
    return f"{kwargs.get('sampler', 'ancestral')}" + (
        f", η={kwargs['eta']}" if kwargs.get("eta") is not None else ""
    )


def report_stage(args) -> None:
    # Rows measured in this checkout's cache replace the committed ones of the same name;
    # committed rows not re-measured here are kept, so no row is dropped.
    committed = (
        json.loads((HERE / "results.json").read_text()) if (HERE / "results.json").exists() else {}
    )
    fresh = {
        r["row"]: r for r in (json.loads(p.read_text()) for p in sorted(CACHE.glob("row-*.json")))
    }
    rows = [fresh.pop(r["row"], r) for r in committed.get("rows", [])] + list(fresh.values())
    order = [r[0] for r in ROWS]
    rows.sort(key=lambda r: order.index(r["row"]) if r["row"] in order else 99)
    for r in rows:  # labels from the row definitions, so old caches read the same
        _, method, kwargs = ROWS[order.index(r["row"])]
        r["method"] = method.replace("-shipped", " (shipped)")
        r["sampler"] = describe_sampler(method, kwargs)
        if method in ("ddpm", "simple"):  # rows of udpm 0.1.0 have no options: unclipped
            clipped = r.get("sampler_options", {}).get("clip_x0", False)
            r["sampler"] += ", x̂₀ clipped" if clipped else ", x̂₀ not clipped"
    floors = sorted(CACHE.glob("floor-*.json"))
    floor = json.loads(floors[-1].read_text()) if floors else committed.get("floor")
    flops = {
        p.stem.removeprefix("flops-"): json.loads(p.read_text())
        for p in sorted(CACHE.glob("flops-*.json"))
    } or committed.get("flops_ratio", {})
    ae_file = CACHE / "autoencoder.json"
    ae = json.loads(ae_file.read_text()) if ae_file.exists() else committed.get("autoencoder")
    lines = results_markdown(rows, floor, flops, args) + autoencoder_markdown(ae)
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(
        json.dumps(
            {"rows": rows, "floor": floor, "flops_ratio": flops, "autoencoder": ae}, indent=2
        )
    )
    plot(rows, floor, HERE / "trilemma.png")
    update_readme(rows, floor)
    print(f"wrote {HERE / 'RESULTS.md'}, {HERE / 'trilemma.png'} and the README's table")


README = HERE.parent / "README.md"
START, END = (
    "<!-- results-table: generated by benchmarks/trilemma.py report -->",
    "<!-- /results-table -->",
)


def readme_table(rows, floor) -> list[str]:
    """The README's summary: every row of results.json, none dropped, in its order."""
    lines = [
        "| method, sampler | NFE | FLOPs/image | ms/image (batch 64) | FD ↓ | precision | recall "
        "| n | training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']}, {r['sampler']} | {r['nfe']} | {r['flops_per_image'] / 1e9:.2f} G "
            f"| {r['ms_per_image_batch64']:.1f} | {r['fd']:.1f} | {r['precision']:.2f} "
            f"| {r['recall']:.2f} | {r['n']} | {r['train_minutes']} min, {r['train_steps']} steps |"
        )
    if floor:
        lines += ["", f"Floor (data against data, n = {floor['n']}): FD {floor['fd']:.2f}."]
    return lines


def update_readme(rows, floor) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"{README} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = "\n".join([START, *readme_table(rows, floor), END])
    README.write_text(head + block + tail)


def results_markdown(rows, floor, flops, args) -> list[str]:
    lines = [
        "# Trilemma benchmark on emoji32 (quality, diversity, speed)",
        "",
        "**Short runs, kept for the record.** Every model here trained for about 8 CPU minutes "
        "(or a fixed step count) and is scored at n = 400: the ranking is of start-up speed, "
        "not of methods. The comparison to read is `CURVES.md`: every system trained alone "
        "for 45 minutes with its own paper's recipe, scored at 15 and 45 minutes at "
        "n = 2,000. This file keeps the FLOPs ratios and the shipped model's n = 400 rows.",
        "",
        f"Produced by `python benchmarks/trilemma.py train|eval|report` at commit "
        f"`{git_commit()}`; machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, no GPU.",
        "Every row: the emoji32-cpu U-Net (same width and depth), the same data, FD/precision"
        "/recall in the shipped emoji32 feature network against all 3,781 images, the same "
        "number of samples (`n`). ms/image is the median of repeated batch-64 runs on this "
        "CPU, measured in the same `eval` run as the other rows, except the `(shipped)` "
        "rows: they are re-measured alone whenever the shipped model changes, so their "
        "ms/image come from a later run (the same network as the `udpm` rows; compare "
        "FLOPs, not ms, across that line).",
        "",
        "| method | sampler | NFE | FLOPs/image | ms/image (b64) | FD ↓ | precision ↑ | recall ↑ "
        "| bpd ↓ (held out) | n | training |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        training = f"{r['train_minutes']} min, {r['train_steps']} steps"
        if "stage1" in r:
            s1 = r["stage1"]
            training += f" + autoencoder {s1['train_minutes']} min, {s1['train_steps']} steps"
        lines.append(
            f"| {r['method']} | {r['sampler']} | {r['nfe']} | {r['flops_per_image'] / 1e9:.2f} G "
            f"| {r['ms_per_image_batch64']:.1f} | {r['fd']:.2f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {bpd_cell(r)} | {r['n']} | {training} |"
        )
    lines += likelihood_notes(rows) + budget_notes(rows)
    if floor:
        lines += [
            "",
            f"Floor: FD between {floor['n']} random emoji32 images and the other "
            f"{floor['n_reference']} is **{floor['fd']:.2f}** (precision "
            f"{floor['precision']:.3f}, recall {floor['recall']:.3f}).",
        ]
    if flops:
        lines += [
            "",
            "## The paper's cost claim (FLOPs counted by torch.utils.flop_counter)",
            "",
            "| preset | parameters | UDPM FLOPs/image (3 calls) | one full-resolution "
            "pass | ratio |",
            "|---|---|---|---|---|",
        ]
        for name, r in flops.items():
            lines.append(
                f"| {name} | {r['parameters'] / 1e6:.1f}M | "
                f"{r['flops_per_image'] / 1e9:.2f} G | "
                f"{r['flops_full_resolution_pass'] / 1e9:.2f} G | "
                f"**{r['flops_ratio']:.3f}** |"
            )
    lines += [
        "",
        "## UDPM sampler overhead and latency (same run)",
        "",
        "Share of sampling time outside network calls (posterior draws, noise, "
        "bookkeeping); target ≤ 5% at batch 64.",
        "",
        "| row | overhead, batch 64 | ms/image, batch 1 | ms/image, batch 64 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if r["method"].startswith("udpm"):
            lines.append(
                f"| {r['row']} | **{100 * r['sampler_overhead_fraction']:.2f}%** | "
                f"{r['ms_per_image_batch1']:.1f} | {r['ms_per_image_batch64']:.1f} |"
            )
    lines.append("")
    return lines


def bpd_cell(row: dict) -> str:
    if row.get("bpd") is None:
        return "—"
    seen = "" if row.get("bpd_heldout", True) else " (seen in training)"
    return f"{row['bpd']:.3f} ± {row['bpd_stderr']:.3f}{seen}"


def likelihood_notes(rows) -> list[str]:
    rows = [r for r in rows if r.get("bpd") is not None]
    if not rows:
        return []
    lines = [
        "",
        "bpd: the variational bound `-log p(x) ≤ prior + reconstruction + diffusion`, in "
        "bits per dimension (nats / (3·32·32·ln 2)), on emoji32's held-out split "
        "(`udpm.eval.heldout`: the last 10% of a permutation seeded 0), which VDM did "
        "not train on; ± is the standard error over those images, each averaged over "
        "independent draws of (t, ε). FD/precision/recall use all 3,781 images as the others.",
        "",
        "| row | held-out images | bound | draws/image | prior | reconstruction | diffusion |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['bpd_images']} | {r['bpd_bound']} | {r['bpd_time_samples']} | "
            f"{r['prior_bpd']:.4f} | {r['reconstruction_bpd']:.4f} | {r['diffusion_bpd']:.3f} |"
        )
    return lines


def budget_notes(rows) -> list[str]:
    methods = {r["method"] for r in rows}
    lines = [note for method, note in BUDGET_NOTES.items() if method in methods]
    threads = torch.get_num_threads()
    for r in rows:
        if r.get("torch_threads", threads) != threads:
            lines.append(
                f"`{r['row']}` was timed with {r['torch_threads']} torch thread(s) on a shared "
                "machine: its ms/image is not comparable with the other rows' (NFE and FLOPs are)."
            )
    return ["", *("- " + line for line in lines)] if lines else []


def autoencoder_markdown(ae) -> list[str]:
    if not ae:
        return []
    z = "x".join(str(v) for v in ae["latent_shape"][1:] + ae["latent_shape"][:1])
    return [
        "## Latent diffusion's autoencoder (stage 1)",
        "",
        f"The `ldm` rows sample in the {z} latent of a KL autoencoder (`emoji32-cpu-ae`, "
        f"{ae['parameters'] / 1e6:.2f}M parameters, {ae['train_minutes']} min, "
        f"{ae['train_steps']} steps, trained without emoji32's last {ae['held_out']['n']} "
        "images); their FLOPs/image include its decoder, run once per image. Reconstruction "
        "PSNR (decoder of the posterior mean, clamped to [-1, 1]):",
        "",
        "| images | n | PSNR (mean) | PSNR (median) |",
        "|---|---|---|---|",
        f"| held out | {ae['held_out']['n']} | **{ae['held_out']['psnr_db']:.2f} dB** | "
        f"{ae['held_out']['psnr_db_median']:.2f} dB |",
        f"| training (first {ae['train']['n']}) | {ae['train']['n']} | "
        f"{ae['train']['psnr_db']:.2f} dB | {ae['train']['psnr_db_median']:.2f} dB |",
        "",
    ]


def plot(rows, floor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in rows:
        scalar = "scalar" in r["row"]
        ax.scatter(
            r["flops_per_image"],
            r["fd"],
            s=45 if not scalar else 90,
            facecolors="none" if scalar else None,
            edgecolors="k" if scalar else None,
        )
        if not scalar:  # the scalar-posterior twin sits on top of its exact row
            ax.annotate(
                f"{r['row']} (R={r['recall']:.2f})",
                (r["flops_per_image"], r["fd"]),
                fontsize=7,
                xytext=(5, 3),
                textcoords="offset points",
            )
    if floor:
        ax.axhline(floor["fd"], ls="--", color="grey", lw=1, label="floor (data vs data)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per image (log)")
    ax.set_ylabel("FD in emoji32 features (lower is better)")
    shipped = [r["train_minutes"] for r in rows if r["row"] == "udpm-shipped"]
    ax.set_title(
        f"emoji32: FD against sampling cost (equal budget; udpm-shipped: "
        f"{shipped[0] if shipped else '?'} min;\nhollow circles: authors' scalar posterior)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def flops_stage(args) -> None:
    """FLOPs ratio of the paper presets (random weights; FLOPs do not depend on them)."""
    from udpm.eval.presets import preset_pipeline
    from udpm.eval.speed import full_resolution_pass_flops, sampling_flops
    from udpm.networks import count_parameters

    for preset in ("cifar10", "ffhq64", "emoji32-cpu"):
        pipe = preset_pipeline(preset, "cpu")
        flops, nfe = sampling_flops(pipe)
        full = full_resolution_pass_flops(pipe)
        (CACHE / f"flops-{preset}.json").write_text(
            json.dumps(
                {
                    "nfe": nfe,
                    "flops_per_image": flops,
                    "flops_full_resolution_pass": full,
                    "flops_ratio": flops / full,
                    "parameters": count_parameters(pipe.network),
                },
                indent=2,
            )
        )
        print(f"{preset}: ratio {flops / full:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stage", choices=["train", "eval", "flops", "report"])
    p.add_argument(
        "--budget-min",
        type=float,
        default=15.0,
        help="training budget per method, in minutes of recorded training time",
    )
    p.add_argument("--chunk", type=int, default=200, help="steps per training chunk")
    p.add_argument(
        "--budget-steps",
        type=int,
        help="train stage: a budget in steps instead of minutes (for a machine that is not "
        "idle: minutes would then depend on the load)",
    )
    p.add_argument(
        "--udpm-history",
        default="runs/emoji32_history",
        help="folder of UDPM model files to pick the budget-matched checkpoint from",
    )
    p.add_argument("--udpm-checkpoint", help="use this UDPM model file instead")
    p.add_argument("--n", type=int, default=500, help="samples per row")
    p.add_argument("--seed", type=int, default=0, help="first sampling seed")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats")
    p.add_argument("--rows", nargs="*", help="only these rows")
    p.add_argument("--methods", nargs="*", help="train stage: only these methods")
    p.add_argument("--force", action="store_true", help="recompute cached rows")
    args = p.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    {"train": train_stage, "eval": eval_stage, "flops": flops_stage, "report": report_stage}[
        args.stage
    ](args)


if __name__ == "__main__":
    main()
