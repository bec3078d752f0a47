"""``udpm eval``: quality and diversity of a model's samples against a data set."""

from __future__ import annotations

import json
import time
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
        "fid (fid needs the optional extra 'udpm[fid]') (default fd,kid,pr)",
    )
    p.add_argument(
        "--feature-net",
        default="emoji32",
        help="feature network name or .safetensors path (default emoji32)",
    )
    p.add_argument("--inception-weights", type=Path, help="local Inception weights for fid")
    p.add_argument("--batch-size", type=int, default=256, help="sampling/feature batch size")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_sampler_arguments(p)
    add_accel_arguments(p)
    p.add_argument("--json", type=Path, help="write the results and protocol here")
    p.set_defaults(func=run)


def generate(args):
    """``(images, protocol)`` from the checkpoint, timing the sampling.

    Under torchrun the seeds are sharded over the ranks and every rank gets all images.
    """
    import udpm
    from udpm.commands.accel import accel_options
    from udpm.commands.sample import sampler_kwargs
    from udpm.samplers.dispatch import sample_sharded
    from udpm.train import distributed as dist
    from udpm.train.loop import resolve_device

    pipe = udpm.load(args.checkpoint, device=dist.local_device(resolve_device(args.device)))
    t0 = time.perf_counter()
    images = sample_sharded(
        pipe.accelerate(**accel_options(args)),
        args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=True,
        **sampler_kwargs(args),
    )
    protocol = {
        "checkpoint": pipe.meta.get("path"),
        "method": pipe.config.method,
        "step": pipe.meta.get("step"),
        "seeds": [args.seed, args.seed + args.n - 1],
        "sampler": sampler_kwargs(args),
        "accel": {k: getattr(args, k) for k in ("compile", "channels_last", "precision")},
        "sampling_seconds": round(time.perf_counter() - t0, 2),
    }
    return images, protocol


def read_samples(folder: Path, resolution: int | None):
    from udpm.data import load_source

    data = load_source(str(folder), resolution=resolution)
    return data.images.float() / 127.5 - 1, {"samples": str(folder)}


def run(args) -> int:
    from udpm.data import load_source
    from udpm.errors import UDPMError
    from udpm.eval import compute_metrics
    from udpm.eval.reference import dataset_identity
    from udpm.train import distributed as dist

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    real = load_source(args.data)
    real_images = real.images.float() / 127.5 - 1
    if args.samples:
        if dist.env_rank() != 0:  # nothing to shard under torchrun: rank 0 measures
            return 0
        fake, protocol = read_samples(args.samples, real.resolution)
    else:
        if args.n < 2:
            raise UDPMError(f"--n must be at least 2, got {args.n}")
        with dist.process_group(args.device):  # under torchrun: seeds sharded over the ranks
            fake, protocol = generate(args)
            main = dist.rank() == 0
        # Measured once, by rank 0 outside the group: torchmetrics would otherwise sync
        # its feature states over the ranks.
        if not main:
            return 0
    if tuple(fake.shape[1:]) != tuple(real_images.shape[1:]):
        raise UDPMError(
            f"samples have shape {tuple(fake.shape[1:])} but {args.data} images "
            f"have {tuple(real_images.shape[1:])}"
        )
    result = compute_metrics(
        fake,
        real_images,
        metrics=metrics,
        feature_net=args.feature_net,
        batch_size=args.batch_size,
        reference_key=dataset_identity(args.data),
        inception_weights=args.inception_weights,
    )
    result.update(protocol, reference=args.data, n_reference=len(real_images))
    for key in ("fd", "kid_mean", "precision", "recall", "fid"):
        if key in result:
            print(f"{key:10s} {result[key]:.4g}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0
