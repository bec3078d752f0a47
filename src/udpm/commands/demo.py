"""``udpm demo``: sample from the shipped model and draw the UDPM process on real emoji."""

from __future__ import annotations

import time
from pathlib import Path

HELP = "sample from the shipped pretrained model and draw the UDPM process (PNG figures)"


def register(sub) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP + ".")
    p.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)"
    )
    p.add_argument("--n", type=int, default=64, help="images in the sample grid (default 64)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from udpm.data import load_source, save_image_grid
    from udpm.errors import UDPMError
    from udpm.figures import forward_process_figure, levels_figure, posterior_figure
    from udpm.images import from_uint8
    from udpm.pipeline import load
    from udpm.processes import UpsamplingProcess

    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        pipe = load()
    except UDPMError as exc:
        print(f"(no pretrained model: {exc}; drawing the process only)")
        pipe = None
    if pipe is not None:
        with torch.inference_mode():
            pipe.sample(4, seed=args.seed)  # warm-up, so the timing below is steady
            t0 = time.perf_counter()
            images, levels = pipe.sample(args.n, seed=args.seed, return_levels=True)
            seconds = time.perf_counter() - t0
        written.append(save_image_grid(images, args.out / "samples.png"))
        written.append(levels_figure(levels[:6], args.out / "sampling_levels.png"))
        print(
            f"sampled {args.n} emoji in {seconds * 1000:.0f} ms on the CPU "
            f"({pipe.process.levels} network calls per image; model step "
            f"{pipe.meta.get('step')})"
        )
    data = load_source("emoji32")
    x0 = from_uint8(data.images[[5, 1200, 2500, 3300]])
    process = UpsamplingProcess()
    written.append(forward_process_figure(process, x0, args.out / "forward_process.png"))
    written.append(posterior_figure(process, x0[1:2], args.out / "posterior_draws.png"))
    for path in written:
        print(f"wrote {path}")
    return 0
