"""Training throughput on this CPU: one process using every core against one process per core.

    python benchmarks/train_processes.py --steps 150 --rounds 2

Each row is a real ``udpm train`` of the ``emoji32-cpu`` preset (global batch 32, seed 0)
with a recipe from ``udpm_ablation.py``, run either as one process with ``T`` torch
threads or under ``torchrun --nproc_per_node=P`` (gloo, DDP) with one thread each. The
rate is measured from the run's own log between step ``--warmup`` and the last step
(``time`` in ``metrics.jsonl``), so start-up, the first steps and the final checkpoint are
left out; rows alternate in ``--rounds`` rounds so that a change in the machine's load hits
them alike, and the median of the rounds is kept. The levels drawn are the same in every
row (one seed, drawn alike on every rank).

Why the two ways train the same model: DDP averages the gradients of the two halves of the
global batch, which is the gradient of the whole batch, and the data, levels and noise are
drawn for the global batch (``tests/test_distributed.py`` checks two processes against one).
Two things are formed per rank instead of per batch: D's minibatch-std groups (4 images
either way, from 16 rows instead of 32) and the mode-seeking term's pairs; both are
groups of independent draws either way. Writes ``benchmarks/train_processes.json`` and
``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (ablation variant, extra --set, processes, threads per process)
ROWS = {
    "0.1.0, 1 process x 2 threads": ("0.1.0", [], 1, 2),
    "shipped, 1 process x 2 threads": ("0.1.0+msb+nodrop", [], 1, 2),
    "shipped + lazy R1, 1 process x 2 threads": ("0.1.0+msb+nodrop", ["r1_every=16"], 1, 2),
    "shipped, 2 processes x 1 thread": ("0.1.0+msb+nodrop", [], 2, 1),
    "shipped + lazy R1, 2 processes x 1 thread": ("0.1.0+msb+nodrop", ["r1_every=16"], 2, 1),
}


def command(row: tuple, out: Path, steps: int) -> tuple[list[str], dict]:
    from udpm_ablation import VARIANTS, udpm_cli

    variant, extra, processes, threads = row
    sets = [*VARIANTS[variant][1], *extra, f"threads={threads}", "log_every=25"]
    sets += [f"sample_every={steps}", f"checkpoint_every={steps}"]
    cmd = [*udpm_cli(processes), "train", "--preset", "emoji32-cpu", "--out", str(out)]
    cmd += ["--steps", str(steps), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return cmd, env


def images_per_s(run: Path, warmup: int, batch: int) -> float:
    """Global images per second between the first logged step >= ``warmup`` and the last."""
    logs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [m for m in logs if "time" in m and m.get("step", 0) >= warmup]
    first, last = timed[0], timed[-1]
    return (last["step"] - first["step"]) * batch / (last["time"] - first["time"])


def measure(names: list[str], steps: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    rates = {name: [] for name in names}
    for r in range(rounds):
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                cmd, env = command(ROWS[name], Path(tmp) / "run", steps)
                subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                rates[name].append(images_per_s(Path(tmp) / "run", warmup, 32))
            print(f"round {r + 1}: {name}: {rates[name][-1]:.1f} images/s", flush=True)
    return rates


def markdown(result: dict) -> str:
    first = next(iter(result["rows"].values()))["images_per_s"]
    lines = [
        "# UDPM training throughput on this CPU: threads against processes",
        "",
        f"`{result['command']}` on {result['machine']}, the machine otherwise idle. "
        f"Each row trains emoji32-cpu (batch 32, seed 0) for {result['steps']} steps; the rate "
        f"is global images/s from step {result['warmup']} to the last (median of "
        f"{result['rounds']} alternated rounds). See the script's docstring for why the rows "
        "train the same model.",
        "",
        "| row | images/s | × first row | rounds |",
        "|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        rounds = ", ".join(f"{x:.1f}" for x in row["rounds"])
        ratio = row["images_per_s"] / first
        lines.append(f"| {name} | {row['images_per_s']:.1f} | {ratio:.2f} | {rounds} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.path.insert(0, str(HERE))
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="rows")
    p.add_argument("--steps", type=int, default=150, help="training steps per run")
    p.add_argument("--warmup", type=int, default=25, help="steps left out of the rate")
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds (median kept)")
    p.add_argument("--out", default="train_processes", help="results name in benchmarks/")
    args = p.parse_args()
    if args.warmup >= args.steps - 25:
        sys.exit("error: --steps must exceed --warmup by at least one log interval (25)")
    rates = measure(args.rows, args.steps, args.warmup, args.rounds)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "command": "python benchmarks/train_processes.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "rows": {
            name: {
                "variant": ROWS[name][0],
                "extra_sets": ROWS[name][1],
                "processes": ROWS[name][2],
                "threads_per_process": ROWS[name][3],
                "images_per_s": statistics.median(r),
                "rounds": r,
            }
            for name, r in rates.items()
        },
    }
    (HERE / f"{args.out}.json").write_text(json.dumps(result, indent=2))
    (HERE / f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
