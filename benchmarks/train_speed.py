"""Training throughput of a preset on this machine: images/s per UDPM level and per step.

    python benchmarks/train_speed.py --preset emoji32-cpu --steps 10

One training step = one D step and one G step at one level (Algorithm 1). The whole-step
figure averages the three levels, as uniform level sampling does in training. Writes
``benchmarks/train_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="emoji32-cpu", help="UDPM preset to measure")
    p.add_argument("--steps", type=int, default=10, help="timed steps per level")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per level")
    args = p.parse_args()

    from udpm.config import preset_config
    from udpm.methods.udpm import UDPMMethod

    config = preset_config(args.preset)
    method = UDPMMethod(config, "cpu")
    x0 = (
        torch.rand(config.batch_size, config.channels, config.resolution, config.resolution) * 2 - 1
    )
    result = {
        "preset": args.preset,
        "batch_size": config.batch_size,
        "levels": {},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
        "command": "python benchmarks/train_speed.py",
    }
    for level in range(1, method.process.levels + 1):
        method.draw_level = lambda level=level: level
        times = []
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            method.step(x0, None, i)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        result["levels"][level] = config.batch_size / statistics.median(times)
        print(f"level {level}: {result['levels'][level]:.1f} images/s")
    per_image = statistics.mean(1 / v for v in result["levels"].values())
    result["whole_step_images_per_s"] = 1 / per_image
    print(f"whole step (uniform levels): {result['whole_step_images_per_s']:.1f} images/s")
    (HERE / "train_speed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
