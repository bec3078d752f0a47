"""Every GPU measurement of issue 17 in one call: sampling and training throughput.

    python benchmarks/gpu.py              # on a GPU; writes benchmarks/GPU.json and GPU.md
    python benchmarks/gpu.py --smoke      # tiny networks, any device, seconds (a test runs it)

Sampling, for the ``cifar10`` (32 px) and ``ffhq64`` (64 px) presets with random weights:
UDPM's 3 calls (the whole sampler), one full-resolution pass of the same network, and
DDIM-10 of a same-sized DDPM network (``out_factor=1``), at batch 1 and at the largest
batch that fits (doubling up to ``--max-batch``), in fp32 and bf16 autocast, eager,
``torch.compile``d and CUDA-graph-captured (``udpm.accel``). Noise is drawn on the device
beforehand, so these are the sampler's and network's times. Timing uses CUDA events after
a warm-up call (which also compiles or captures; its time is reported), then at least
``--repeats`` runs; the median and the min..max spread are reported.

Also: the sampler's own overhead (its CPU work and launches, seeded CPU noise included) at
batch 64 with ``udpm.eval.speed.time_sampling``; training throughput and peak memory of the
``cifar10`` UDPM preset and of the emoji32 recipes whose CPU step costs ``ABLATION.md``
gives (the 0.1.0 recipe, the shipped one, and its no-R1 ceiling), in fp32 and bf16 (LPIPS
off: its VGG weights are not shipped), for issue 15's step-cost target on a GPU; and,
with ``--emoji-steps``, FD against training time of ``emoji32-cpu`` trained on the device.
A failing measurement (out of memory, a compiler error) is recorded and the run goes on.

Planning (estimates, not yet measured): the eager and graph measurements take a few
minutes; compilation dominates the rest, about 20 inductor compilations (3 UDPM sizes, one
full-size pass and DDIM's size, at 2 batches, 2 presets, bf16 only by default). To fit
calls of at most 10 minutes, split the run with ``--sections``/``--modes`` and ``--append``:

    python benchmarks/gpu.py --modes eager,graph --sections sampling,overhead,training
    python benchmarks/gpu.py --modes compiled --sections sampling --append
    python benchmarks/gpu.py --sections emoji --emoji-steps 3000 --append
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from udpm.eval.timing import elapsed, peak_mb, reset_memory, sync, timed

HERE = Path(__file__).resolve().parent
PAPER = "765 images/s at 64 px on an NVIDIA A6000 (UDPM paper; reported, not verified here)"
MODES = ("eager", "compiled", "graph")
SMOKE_NETWORK = dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=())


# --- networks --------------------------------------------------------------------------


def pipeline(preset: str, method: str, device, smoke: bool):
    """A preset's network (random weights, eval mode) and process, for ``method``."""
    from udpm.config import apply_overrides, preset_config
    from udpm.pipeline import Pipeline, build_network, build_process_for

    config = preset_config(preset)
    if smoke:
        config = config.replace(network={**config.network, **SMOKE_NETWORK})
    if method != config.method:  # the method's own paper settings, the preset's network
        config = apply_overrides(config, [f"method={method}"])
    classes = config.network.get("num_classes", 0) if config.class_conditional else 0
    torch.manual_seed(0)
    network = build_network(config, num_classes=classes)
    # The last convolution starts at zero; random weights there keep the output nonzero.
    torch.nn.init.normal_(network.out_conv.weight, std=0.02)
    return Pipeline(network.to(device), build_process_for(config), config, {"num_classes": classes})


def workloads(udpm_pipe, ddpm_pipe, device):
    """``name -> make(network_of, batch) -> fn()``: the three things timed per image."""
    from udpm.samplers.gaussian import sample_ddim
    from udpm.samplers.udpm import level_shapes, sample_udpm

    shape = udpm_pipe.image_shape
    classes = udpm_pipe.num_classes

    def labels(n):
        return torch.randint(classes, (n,), device=device) if classes else None

    def udpm(network_of, n):
        net = network_of(udpm_pipe)
        noises = [torch.randn(n, *s, device=device) for s in level_shapes(udpm_pipe.process, shape)]
        y = labels(n)
        return lambda: sample_udpm(net, udpm_pipe.process, shape, noises=noises, class_labels=y)

    def full_pass(network_of, n):
        net, x = network_of(udpm_pipe), torch.randn(n, *shape, device=device)
        t, y = torch.full((n,), 0.5, device=device), labels(n)
        return lambda: net(x, t, y)

    def ddim10(network_of, n):
        net, x_T, y = network_of(ddpm_pipe), torch.randn(n, *shape, device=device), labels(n)
        process = ddpm_pipe.process
        return lambda: sample_ddim(net, process, shape, noises=[x_T], class_labels=y, steps=10)

    return {"udpm_3_calls": udpm, "full_resolution_pass": full_pass, "ddim_10": ddim10}


def accelerated(mode: str, precision: str):
    """``pipe -> network`` for one mode and precision (a fresh wrapper each time)."""
    from udpm.accel import accelerate, precision_dtype

    dtype = precision_dtype(precision)

    def network_of(pipe):
        return accelerate(
            pipe.network,
            autocast_dtype=dtype,
            compile=mode == "compiled",
            cuda_graph=mode == "graph",
        )

    return network_of


# --- timing (udpm.eval.timing) ----------------------------------------------------------


def guarded(fn, device) -> dict:
    """``fn()``'s dict, or ``{"error": ...}`` for an out-of-memory or compiler failure."""
    try:
        return fn()
    except Exception as exc:  # recorded, so one failure does not cost the whole GPU run
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return {"error": f"{type(exc).__name__}: {first}"}
    finally:
        if "torch._dynamo" in sys.modules:  # imported by a compiled measurement (slow)
            torch._dynamo.reset()  # its graphs are not reused by the next one
        reset_memory(device)


def largest_batch(make, device, cap: int) -> int:
    """The largest power of two up to ``cap`` for which one eager fp32 run fits (bf16 needs
    less memory; compiled and graph-captured runs may need more, and say so if they fail)."""
    best, n = 1, 2
    while n <= cap:
        reset_memory(device)
        try:
            with torch.no_grad():
                make(accelerated("eager", "fp32"), n)()
            sync(device)
        except torch.cuda.OutOfMemoryError:
            break
        best, n = n, 2 * n
    reset_memory(device)
    return best


# --- the measurements ------------------------------------------------------------------


def sampling(args, device) -> list[dict]:
    rows = []
    for preset in args.presets:
        pipes = [pipeline(preset, m, device, args.smoke) for m in ("udpm", "ddpm")]
        makers = workloads(*pipes, device)
        # One batch for all three workloads, so that their ratios compare like with like.
        top = min(largest_batch(make, device, args.max_batch) for make in makers.values())
        for name, make in makers.items():
            for batch in sorted({1, top}):
                for precision in args.precisions:
                    for mode in args.modes:
                        if mode == "compiled" and precision not in args.compiled_precisions:
                            continue  # compilation dominates the run's time; see --help
                        row = dict(
                            preset=preset,
                            workload=name,
                            batch=batch,
                            precision=precision,
                            mode=mode,
                        )
                        row.update(
                            guarded(
                                partial(measure, make, mode, precision, batch, device, args), device
                            )
                        )
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    return rows


def measure(make, mode, precision, batch, device, args) -> dict:
    if mode == "graph" and device.type != "cuda":
        return {"error": "skipped: CUDA graphs need a CUDA device"}
    t = timed(make(accelerated(mode, precision), batch), device, args.repeats, args.min_seconds)
    ms = 1000 * t["median_s"] / batch
    return {
        "ms_per_image": ms,
        "images_per_s": 1000 / ms,
        "ms_per_image_range": [1000 * t["min_s"] / batch, 1000 * t["max_s"] / batch],
        "repeats": t["repeats"],
        "warmup_s": t["warmup_s"],
        "peak_memory_mb": peak_mb(device),
    }


def overhead(args, device) -> list[dict]:
    """The sampler's share of time outside network calls at batch 64 (CallTimer syncs)."""
    from udpm.eval.speed import time_sampling

    rows, batch = [], 64 if not args.smoke else 2
    for preset in args.presets:
        pipe = pipeline(preset, "udpm", device, args.smoke)
        for precision, mode in (("fp32", "eager"), ("bf16", "eager"), ("bf16", "graph")):

            def run(precision=precision, mode=mode, pipe=pipe):
                if mode == "graph" and device.type != "cuda":
                    return {"error": "skipped: CUDA graphs need a CUDA device"}
                fast = pipe.accelerate(**accel_options(precision, mode))
                return time_sampling(fast, batch, repeats=args.repeats)

            row = dict(preset=preset, batch=batch, precision=precision, mode=mode)
            row.update(guarded(run, device))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def accel_options(precision: str, mode: str) -> dict:
    from udpm.accel import precision_dtype

    return {
        "autocast_dtype": precision_dtype(precision),
        "compile": mode == "compiled",
        "cuda_graph": mode == "graph",
    }


def train_recipes() -> dict[str, tuple[str, list[str], int]]:
    """name -> (preset, --set assignments, classes): the paper's cifar10 preset, and the
    emoji32 recipes whose CPU step costs are in ``train_speed.json`` (the 0.1.0 recipe, the
    shipped one, and the shipped one without R1, its ceiling), so the GPU's ratios can be
    set beside the CPU's for the step-cost target."""
    sys.path.insert(0, str(HERE))
    from train_speed import BOUNDS
    from udpm_ablation import VARIANTS

    shipped = VARIANTS["0.1.0+msb+nodrop"][1]
    return {
        "cifar10": ("cifar10", ["perceptual=none"], 10),
        "emoji32-0.1.0": ("emoji32-cpu", VARIANTS["0.1.0"][1], 0),
        "emoji32-shipped": ("emoji32-cpu", shipped, 0),
        "emoji32-shipped@no-r1": ("emoji32-cpu", shipped + BOUNDS["no-r1"], 0),
    }


def training(args, device) -> list[dict]:
    """img/s of whole UDPM steps (D + G at one level, levels in turn) and peak memory."""
    from udpm.config import apply_overrides, preset_config

    recipes = train_recipes()
    rows = []
    for name in args.train_recipes:
        preset, sets, classes = recipes[name]
        config = apply_overrides(preset_config(preset), sets)
        if args.smoke:
            config = config.replace(
                network={**config.network, **SMOKE_NETWORK},
                discriminator={**config.discriminator, "model_channels": 8},
                batch_size=4,
            )
        for precision in args.precisions:
            row = {"preset": preset, "workload": name, "precision": precision}
            row.update(
                guarded(partial(train_step_rate, config, classes, precision, device, args), device)
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def train_step_rate(config, classes: int, precision: str, device, args) -> dict:
    """Median img/s per level after a warm-up over every level; the whole step averages the
    levels' seconds per image as the recipe draws them (``train_speed.whole_step``)."""
    from train_speed import whole_step  # on sys.path since train_recipes()

    from udpm.accel import precision_dtype
    from udpm.methods.udpm import UDPMMethod

    torch.manual_seed(0)
    n = config.batch_size
    method = UDPMMethod(config, device, classes, precision_dtype(precision))
    x0 = torch.rand(n, 3, config.resolution, config.resolution, device=device) * 2 - 1
    y = torch.randint(classes, (n,), device=device) if classes else None
    levels = range(1, method.process.levels + 1)
    for step in range(args.train_warmup):
        method.draw_level = lambda step=step: levels[step % len(levels)]
        method.step(x0, y, step)
    per_level = {}
    for level in levels:
        method.draw_level = lambda level=level: level
        times = [elapsed(lambda: method.step(x0, y, 0), device) for _ in range(args.train_steps)]
        per_level[str(level)] = n / statistics.median(times)
    return {
        "images_per_s_per_level": per_level,
        "images_per_s": whole_step(per_level, config.settings.level_weights),
        "batch": n,
        "peak_memory_mb": peak_mb(device),
    }


def emoji_curve(args, device) -> dict:
    """Train emoji32-cpu on the device; FD of each checkpoint against training time."""
    import udpm
    from udpm import checkpoint as ckpt
    from udpm.config import apply_overrides, preset_config
    from udpm.eval import compute_metrics
    from udpm.eval.reference import dataset_identity
    from udpm.train.loop import train

    every = max(1, args.emoji_steps // args.emoji_points)
    config = apply_overrides(
        preset_config("emoji32-cpu"),
        [
            f"steps={args.emoji_steps}",
            f"checkpoint_every={every}",
            f"device={device}",
            f"keep={args.emoji_points + 1}",
            f"sample_every={10**9}",
        ],
    )
    run = args.emoji_run or Path(tempfile.mkdtemp(prefix="udpm-emoji32-gpu-")) / "run"
    train(config, run, progress=False)
    rows, key = [], dataset_identity("emoji32")
    for step in ckpt.checkpoint_steps(run):
        pipe = udpm.load(ckpt.model_path(run, step), device=device)
        fake = pipe.sample(args.emoji_n, seed=0, batch_size=500)
        metrics = compute_metrics(fake, "emoji32", ("fd",), reference_key=key, progress=False)
        rows.append(
            {"step": step, "train_seconds": pipe.meta["train_seconds"], "fd": metrics["fd"]}
        )
        print(json.dumps(rows[-1]), flush=True)
    return {"preset": "emoji32-cpu", "n": args.emoji_n, "rows": rows, "run": str(run)}


# --- report ----------------------------------------------------------------------------


def environment(device) -> dict:
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%F %T %Z"),
    }
    if device.type == "cuda":
        info.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_conv=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny networks and sizes (seconds)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--presets", default="cifar10,ffhq64")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--modes", default=",".join(MODES), help="eager,compiled,graph")
    p.add_argument(
        "--compiled-precisions",
        default="bf16",
        help="precisions measured compiled too (default bf16: each compiled measurement "
        "compiles once per input size, about 10 compilations per preset and precision)",
    )
    p.add_argument("--max-batch", type=int, default=256, help="cap of the batch search")
    p.add_argument("--repeats", type=int, default=5, help="timed runs at least")
    p.add_argument("--min-seconds", type=float, default=1.0, help="...and at least this long")
    p.add_argument("--train-steps", type=int, default=5, help="timed steps per level")
    p.add_argument("--train-warmup", type=int, default=3)
    p.add_argument(
        "--train-recipes",
        default="cifar10,emoji32-0.1.0,emoji32-shipped,emoji32-shipped@no-r1",
        help="training section: the recipes timed (gpu.py's train_recipes)",
    )
    p.add_argument("--emoji-steps", type=int, default=0, help="train emoji32-cpu (0: skip)")
    p.add_argument("--emoji-points", type=int, default=6, help="checkpoints measured")
    p.add_argument("--emoji-n", type=int, default=2000, help="samples per FD")
    p.add_argument("--emoji-run", type=Path, help="run directory (default: a new temporary one)")
    p.add_argument(
        "--out",
        type=Path,
        help="where GPU.json and GPU.md go (default benchmarks/; with --smoke a temporary one)",
    )
    p.add_argument(
        "--sections",
        default="sampling,overhead,training,emoji",
        help="what to measure (emoji only with --emoji-steps)",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add to the GPU.json in --out, to split a run over several calls",
    )
    args = p.parse_args(argv)
    keys = ("presets", "precisions", "modes", "compiled_precisions", "sections", "train_recipes")
    for key in keys:
        setattr(args, key, [s for s in getattr(args, key).split(",") if s])
    if args.out is None:  # smoke figures must never land in benchmarks/GPU.md
        args.out = Path(tempfile.mkdtemp(prefix="udpm-gpu-smoke-")) if args.smoke else HERE
    if args.smoke:
        args.max_batch, args.repeats, args.min_seconds = min(args.max_batch, 2), 1, 0.0
        args.train_steps, args.train_warmup = 1, 1
        args.emoji_n = min(args.emoji_n, 64)
    unknown = set(args.sections) - {"sampling", "overhead", "training", "emoji"}
    if unknown:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    unknown = set(args.train_recipes) - set(train_recipes())
    if unknown:
        p.error(f"unknown training recipe(s): {', '.join(sorted(unknown))}")
    return args


def write(result: dict, out: Path) -> None:
    sys.path.insert(0, str(HERE))
    from gpu_report import markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "GPU.json").write_text(json.dumps(result, indent=2))
    (out / "GPU.md").write_text(markdown(result))


ROW_KEYS = ("preset", "workload", "batch", "precision", "mode")


def merged(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows with ``new`` ones added; a new row replaces an old one of the same setup."""

    def key(row):
        return tuple(row.get(k) for k in ROW_KEYS)

    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + new


def main(argv=None) -> dict:
    from udpm.train.loop import resolve_device

    args = parse(argv)
    device = resolve_device(args.device)
    if "compiled" in args.modes:
        # UDPM's 3 sizes x 2 batches outgrow dynamo's default of 8 graphs per frame.
        torch._dynamo.config.cache_size_limit = 64
    command = "python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    previous = args.out / "GPU.json"
    result = json.loads(previous.read_text()) if args.append and previous.is_file() else {}
    result["commands"] = [*result.get("commands", []), command.strip()]
    result.update(environment=environment(device), paper=PAPER, smoke=args.smoke)
    functions = {"sampling": sampling, "overhead": overhead, "training": training}
    functions["emoji"] = emoji_curve
    spent, t0 = result.get("total_seconds", 0.0), time.perf_counter()
    for name in args.sections:
        if name == "emoji" and not args.emoji_steps:
            continue
        rows = functions[name](args, device)
        result[name] = rows if name == "emoji" else merged(result.get(name, []), rows)
        result["total_seconds"] = spent + time.perf_counter() - t0
        write(result, args.out)  # after each section: a run cut short keeps what it measured
    print(f"wrote {args.out / 'GPU.json'} and {args.out / 'GPU.md'}")
    return result


if __name__ == "__main__":
    main()
