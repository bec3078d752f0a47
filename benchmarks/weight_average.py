"""Post-hoc weight averaging of a UDPM run's EMA snapshots, scored on validation seeds.

    python benchmarks/weight_average.py --run benchmarks/cache/curves/run-udpm \
        --last 12500 --windows 0 1000 2500 5000

A GAN generator's weights keep circling late in training, and the emoji32-cpu run's FD
swings by several points between checkpoints 750 steps apart (``PRETRAINED.md``). A
uniform average of the generator's snapshots over a window (Yazıcı et al., "The unusual
effectiveness of averaging in GAN training", ICLR 2019; a post-hoc EMA in the sense of
Karras et al., "Analyzing and improving the training dynamics of diffusion models", CVPR
2024) is an estimate of the centre of that orbit, at no training cost. Each window W
averages the run's saved EMA weights from step ``last - W`` to ``last`` (W = 0: the plain
last checkpoint).

Scores are on **validation seeds** (``--seed``, default 100000..), disjoint from the
reported seeds 0..1999, so choosing a window here is not choosing on the reported numbers.
Appends its rows to ``benchmarks/weight_average.json`` (committed; read in
``ablation_reading.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def average_models(files: list[Path]) -> tuple[dict, dict]:
    """The uniform mean of the floating tensors of ``files`` (others from the last file)."""
    from udpm import checkpoint as ckpt

    total, steps = {}, []
    for path in files:  # oldest first: the last file's meta and integer tensors are kept
        state, meta = ckpt.load_model(path)
        steps.append(meta["step"])
        for k, v in state.items():
            v = v.double() if v.is_floating_point() else v
            total[k] = total[k] + v if k in total and v.is_floating_point() else v
    mean = {k: (v / len(files)).float() if v.is_floating_point() else v for k, v in total.items()}
    return mean, {**meta, "averaged_steps": steps}


def window_files(run: Path, last: int, window: int) -> list[Path]:
    from udpm import checkpoint as ckpt

    steps = [s for s in ckpt.checkpoint_steps(run) if last - window <= s <= last]
    if not steps or steps[-1] != last:
        sys.exit(f"{run} has no checkpoint at step {last}")
    return [ckpt.model_path(run, s) for s in steps]


COMMAND = "python benchmarks/weight_average.py "


def scores(measured: dict) -> dict:
    return {k: measured[k] for k in ("fd", "precision", "recall")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run directory")
    parser.add_argument("--last", type=int, required=True, help="the window's last step")
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 1000, 2500, 5000],
                        help="window lengths in steps (0: the plain last checkpoint)")  # fmt: skip
    parser.add_argument("--n", type=int, default=2000, help="samples per score")
    parser.add_argument("--seed", type=int, default=100_000, help="first validation seed")
    args = parser.parse_args()
    from pretrained_quality import machine, measure, real_images

    from udpm import checkpoint as ckpt

    real, rows = real_images(), []
    with tempfile.TemporaryDirectory() as tmp:
        for window in args.windows:
            files = window_files(args.run, args.last, window)
            state, meta = average_models(files)
            path = Path(tmp) / f"model-{window}.safetensors"
            ckpt.save_model(path, state, meta)
            row = {"last": args.last, "window": window, "snapshots": len(files),
                   **scores(measure(path, real, args.n, args.seed)), "n": args.n, "seed": args.seed,
                   "run": str(args.run), "machine": machine(),
                   "command": COMMAND + " ".join(sys.argv[1:])}  # fmt: skip
            rows.append(row)
            print(f"window {window:5d} ({len(files):2d} snapshots): FD {row['fd']:.2f} "
                  f"P {row['precision']:.3f} R {row['recall']:.3f}", flush=True)  # fmt: skip
    out = HERE / "weight_average.json"
    previous = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(previous + rows, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
