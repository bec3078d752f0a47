"""``udpm eval``: quality and diversity of a model's samples against a data set."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "measure samples against real images: FD, KID, precision/recall (and Inception FID)"


def register(sub) -> None:
    from udpm.commands.accel import add_accel_arguments
    from udpm.commands.sample import add_sampler_arguments

    p = sub.add_parser(
        "eval",
        help=HELP,
        description=HELP + ". Distances use the feature "
        "network shipped for the data set (no download); the JSON records "
        "the protocol: seeds, n, the reference and the hashes.",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="model file or run directory (default: the shipped pretrained model)",
    )
    p.add_argument(
        "--samples", type=Path, help="read generated PNGs from this folder instead of sampling"
    )
    p.add_argument("--data", default="emoji32", help="reference SOURCE (default emoji32)")
    p.add_argument("--n", type=int, default=2000, help="number of generated images (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="first sampling seed (default 0)")
    p.add_argument(
        "--metrics",
        default="fd,kid,pr",
        help="comma-separated: fd, kid, pr, "
        "fid (fid needs the optional extra 'udpm[fid]'), bpd (likelihood models: the "
        "bound on --bpd-data's images, in bits per dimension) (default fd,kid,pr)",
    )
    p.add_argument(
        "--feature-net",
        default="emoji32",
        help="feature network: a shipped name (emoji32), a .safetensors file from 'udpm "
        "features --data SOURCE', or 'pixels' (network-free) (default emoji32)",
    )
    p.add_argument("--inception-weights", type=Path, help="local Inception weights for fid")
    p.add_argument(
        "--bpd-data",
        help="bpd: measure the bound on this SOURCE's images (default: --data); e.g. a "
        "held-out split written by udpm.eval.heldout.write_split",
    )
    p.add_argument(
        "--bpd-time-samples",
        type=int,
        default=8,
        help="bpd: draws of (t, noise) averaged per image (default 8)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="sampling/feature batch size")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_sampler_arguments(p)
    add_accel_arguments(p)
    p.add_argument(
        "--no-progress", action="store_true", help="plain periodic lines instead of a bar"
    )
    p.add_argument("--json", type=Path, help="write the results and protocol here")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from udpm.commands.sample import announce_sampling, sampler_kwargs
    from udpm.errors import UDPMError
    from udpm.eval.advice import warnings_for
    from udpm.eval.protocol import generate, measure, read_samples, reference_images
    from udpm.train import distributed as dist

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    likelihood = {}
    if "bpd" in metrics:
        metrics = tuple(m for m in metrics if m != "bpd")
        if dist.env_rank() == 0:  # one process measures the bound
            likelihood = bpd_result(args)
        if not metrics:
            write_result(likelihood, args.json)
            return 0
    if args.samples:
        if dist.env_rank() != 0:  # nothing to shard under torchrun: rank 0 measures
            return 0
        real, resolution = reference_images(args.data)
        fake, protocol = read_samples(args.samples, resolution)
        _say_reference(args.data, real)
        for line in warnings_for(args.data, args.feature_net, tuple(real.shape[1:]), len(fake)):
            print(f"udpm eval: warning: {line}", file=sys.stderr)
    else:
        if args.n < 2:
            raise UDPMError(f"--n must be at least 2, got {args.n}")
        with dist.process_group(args.device):  # under torchrun: seeds sharded over the ranks
            pipe = load_model(args)
            # The reference at the model's shape, before sampling: a mismatch fails now.
            real, _ = reference_images(args.data, pipe.image_shape)
            main = dist.rank() == 0
            if main:
                _say_reference(args.data, real)
                for line in warnings_for(args.data, args.feature_net, pipe.image_shape, args.n):
                    print(f"udpm eval: warning: {line}", file=sys.stderr)
                announce_sampling(pipe, args.n, sampler_kwargs(args))
            fake, protocol = generate(
                pipe,
                args.n,
                seed=args.seed,
                batch_size=args.batch_size,
                progress=not args.no_progress or "lines",
                **sampler_kwargs(args),
            )
        # Measured once, by rank 0 outside the group: torchmetrics would otherwise sync
        # its feature states over the ranks.
        if not main:
            return 0
    result = measure(
        fake,
        args.data,
        protocol,
        metrics=metrics,
        feature_net=args.feature_net,
        batch_size=args.batch_size,
        inception_weights=args.inception_weights,
        real=real,
        progress=not args.no_progress,
    )
    write_result({**result, **likelihood}, args.json)
    return 0


def _say_reference(source: str, real) -> None:
    """What the reference holds, and how it is loaded (as the model's training data was)."""
    from udpm.data.survey import survey

    c, h, w = real.shape[1:]
    kind = "grey" if c == 1 else "RGB"
    print(f"reference: {source}: {survey(source).describe()}; measured as {w}x{h} {kind}")


def bpd_result(args) -> dict:
    """The likelihood bound of the checkpoint on ``--bpd-data`` (or ``--data``)."""
    import udpm
    from udpm.device import resolve_device
    from udpm.eval.likelihood import evaluate_bpd_source

    pipe = udpm.load(args.checkpoint, device=resolve_device(args.device))
    return evaluate_bpd_source(
        pipe,
        args.bpd_data or args.data,
        time_samples=args.bpd_time_samples,
        batch_size=min(args.batch_size, 64),
        seed=args.seed,
    )


def load_model(args):
    """The checkpoint on this process's device (under torchrun: its local GPU)."""
    import udpm
    from udpm.commands.accel import accel_options
    from udpm.device import resolve_device
    from udpm.train import distributed as dist

    pipe = udpm.load(args.checkpoint, device=dist.local_device(resolve_device(args.device)))
    options = accel_options(args)
    if any(options.values()):
        pipe = pipe.accelerate(**options)
        pipe.meta = {
            **pipe.meta,
            "accel": {k: getattr(args, k) for k in ("compile", "channels_last", "precision")},
        }
    return pipe


def write_result(result: dict, path: Path | None) -> None:
    """Print each number (FD with its floor), then write the JSON if asked."""
    for key in ("fd", "kid_mean", "precision", "recall", "fid", "bpd", "bpd_stderr"):
        if key not in result:
            continue
        line = f"{key:10s} {result[key]:.4g}"
        if key == "fd" and "fd_floor" in result:
            line += f"   (floor {result['fd_floor']:.4g}: data against data at n = "
            line += f"{result['fd_floor_n']})"
        print(line)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {path}")
