"""Accelerated sampling (``udpm.accel``) agrees with plain fp32 sampling on the CPU.

Each agreement check is paired with a check that the option really took effect (compiled
graphs, NHWC tensors, bf16 inside the network), so a wrapper that did nothing would fail.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

import udpm
from udpm.accel import CUDAGraphed, accelerate, precision_dtype
from udpm.errors import UDPMError
from udpm.processes.upsampling import UpsamplingProcess
from udpm.samplers.udpm import sample_udpm, seeded_noises

from .conftest import ShuffleNet


@functools.cache
def compile_problem() -> str | None:
    """Why ``torch.compile`` cannot run here (no C++ compiler, unsupported Python), or None."""
    try:
        torch.compile(lambda x: x + 1)(torch.ones(2))
    except Exception as exc:  # any backend failure means: skip, do not fail
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


@pytest.fixture
def pipe():
    return udpm.load()  # the shipped emoji32 model: trained weights, 3 levels, 32 px


def stem_calls(fast, run) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of the wrapped U-Net's first convolution in each call of ``run``."""
    seen = []
    net = fast.network.network
    handle = net.stem.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_compiled_sampling_equals_eager():
    problem = compile_problem()
    if problem:
        pytest.skip(f"torch.compile is unsupported here ({problem})")
    process = UpsamplingProcess((0.5, 0.2, 1e-3), (0.1, 0.2, 0.3))
    net = ShuffleNet().eval()
    noises = seeded_noises(process, (3, 16, 16), range(3))
    eager = sample_udpm(net, process, (3, 16, 16), noises=noises)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = sample_udpm(accelerate(net, compile=True), process, (3, 16, 16), noises=noises)
    # One graph per level size (8, 4 and 2 px): the network really ran compiled.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 3
    # Inductor reorders float32 sums, so the two agree to rounding, not bit for bit.
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)


def test_channels_last_sampling_agrees_and_leaves_the_pipeline_alone(pipe):
    fast = pipe.accelerate(channels_last=True)
    seen = stem_calls(fast, lambda: fast.sample(4, seed=3))
    assert len(seen) == 3 and all(
        x.is_contiguous(memory_format=torch.channels_last) for x, _ in seen
    )
    assert fast.network.network.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.network.stem.weight.is_contiguous()  # a copy was converted, not the model
    # Only the summation order of the convolutions changes: float32 rounding, ~1e-6.
    torch.testing.assert_close(fast.sample(4, seed=3), pipe.sample(4, seed=3), rtol=0, atol=1e-4)
    torch.testing.assert_close(
        fast.network(torch.ones(2, 3, 8, 8), torch.full((2,), 0.5)),
        pipe.network(torch.ones(2, 3, 8, 8), torch.full((2,), 0.5)),
        rtol=0,
        atol=1e-5,
    )


def test_bf16_network_call_agrees_within_a_few_bf16_roundings(pipe):
    """bf16 keeps 8 significant bits: unit roundoff u = 2^-8 ≈ 0.4%. Through a U-Net the
    rounding errors of its layers add up to a few u (about 1% measured here), so one call
    must agree to 10 u in relative L2 norm, and it must not agree exactly (bf16 really ran).
    """
    fast = pipe.accelerate(autocast_dtype=precision_dtype("bf16"))
    x, t = torch.randn(8, 3, 16, 16) * 0.5, torch.full((8,), pipe.process.level_time(1))
    with torch.no_grad():
        seen = stem_calls(fast, lambda: fast.network(x, t))
        a, b = pipe.network(x, t), fast.network(x, t)
    assert b.dtype == torch.float32  # the sampler math after the call stays fp32
    relative = ((b - a).norm() / a.norm()).item()
    assert 0 < relative < 10 * 2**-8
    assert seen[0][1].dtype == torch.bfloat16  # the convolutions ran in bf16


def test_bf16_samples_agree_in_psnr(pipe):
    """Three calls feed each other and a coarse-level difference is upsampled, so single
    pixels may differ by much more than a call's error; the images as a whole must agree:
    PSNR (peak-to-peak 2) of at least 30 dB, i.e. an RMS error under 8 grey levels. About
    40 dB is measured over 16 images; a few sensitive images weigh most (over 2 it fell to
    30-33 dB, eager or compiled), so the check averages 16."""
    a = pipe.sample(16, seed=0)
    b = pipe.accelerate(autocast_dtype=torch.bfloat16).sample(16, seed=0)
    mse = ((a - b) ** 2).mean()
    assert 0 < mse and 10 * torch.log10(4 / mse) > 30


def test_no_option_returns_the_network_itself(pipe):
    assert accelerate(pipe.network) is pipe.network


def test_bad_options_are_one_line_errors(pipe):
    with pytest.raises(UDPMError, match="precision must be one of fp32, bf16"):
        precision_dtype("fp8")
    graphed = accelerate(pipe.network, cuda_graph=True)
    assert isinstance(graphed, CUDAGraphed) and not graphed.training  # the net's eval mode
    with torch.no_grad(), pytest.raises(UDPMError, match="CUDA graphs need a CUDA device"):
        graphed(torch.zeros(1, 3, 8, 8), torch.zeros(1))


def test_sample_bench_and_eval_take_the_flags(tmp_path):
    from udpm.cli import main

    out = tmp_path / "png"
    args = ["sample", "--out", str(out), "--n", "2", "--device", "cpu"]
    assert main([*args, "--precision", "bf16", "--channels-last"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["seed000000.png", "seed000001.png"]
    report = tmp_path / "bench.json"
    args = ["bench", "--batches", "2", "--repeats", "1", "--device", "cpu"]
    assert main([*args, "--precision", "bf16", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["accel"]["autocast_dtype"] == "torch.bfloat16"
    assert result["nfe"] == 3 and result["ms_per_image_batch2"] > 0
    args = ["eval", "--n", "8", "--metrics", "fd", "--device", "cpu", "--precision", "bf16"]
    assert main([*args, "--json", str(tmp_path / "eval.json")]) == 0
    protocol = json.loads((tmp_path / "eval.json").read_text())["accel"]
    assert protocol == {"compile": False, "channels_last": False, "precision": "bf16"}


def test_training_with_compile_hooks_the_generator(tmp_path, monkeypatch):
    """The hook wraps G's training forward; ``aot_eager`` traces it as inductor would
    (dynamo + AOT autograd) but skips code generation, so this takes seconds."""
    if compile_problem():
        pytest.skip(f"torch.compile is unsupported here ({compile_problem()})")
    from udpm.train.loop import Trainer

    from .test_train import tiny_config

    data = tmp_path / "d.npz"
    np.savez(data, images=np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), np.uint8))
    config = tiny_config(data, method="ddpm", steps=2, diffusion={"process": {"T": 20}})
    plain = Trainer(config, tmp_path / "plain", progress=False)
    # Without the flag nothing is compiled (a builtin named `compile` once made it always on).
    assert not isinstance(plain.method.net("G"), torch._dynamo.eval_frame.OptimizedModule)
    plain.run()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled = Trainer(config, tmp_path / "compiled", progress=False, compile=True)
    assert isinstance(compiled.method.net("G"), torch._dynamo.eval_frame.OptimizedModule)
    compiled.run()
    losses = [
        [
            json.loads(r)["loss_g"]
            for r in (tmp_path / run / "metrics.jsonl").read_text().split("\n")
            if r
        ]
        for run in ("plain", "compiled")
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    # Adam's sign-flip bound (see tests/test_gpu.py): at most 3 lr apart in two warm-up steps.
    a, b = plain.method.generator.state_dict(), compiled.method.generator.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=3 * config.optim.lr, msg=k)


def test_gpu_benchmark_smoke_run_writes_every_section(tmp_path):
    """``benchmarks/gpu.py --smoke`` runs on the CPU, so the GPU script cannot rot."""
    import importlib.util

    from .test_distributed import ROOT

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--smoke", "--device", "cpu", "--presets", "cifar10", "--precisions", "fp32,bf16"]
    argv += ["--modes", "eager,graph", "--emoji-steps", "1", "--emoji-points", "1"]
    argv += ["--emoji-run", str(tmp_path / "emoji"), "--out", str(tmp_path)]
    result = bench.main(argv)
    assert json.loads((tmp_path / "GPU.json").read_text()) == result
    timed = [r for r in result["sampling"] if "error" not in r]
    # 3 workloads x batches {1, 2} x 2 precisions, eager; graph mode is skipped on a CPU.
    assert len(timed) == 12 and {r["batch"] for r in timed} == {1, 2}
    for r in timed:
        assert r["images_per_s"] * r["ms_per_image"] == pytest.approx(1000)
        assert r["ms_per_image_range"][0] <= r["ms_per_image"] <= r["ms_per_image_range"][1]
    skipped = [r for r in result["sampling"] if "error" in r]
    assert len(skipped) == 12 and all(
        "CUDA graphs need a CUDA device" in r["error"] for r in skipped
    )
    every = [(w, p) for w in bench.train_recipes() for p in ("fp32", "bf16")]
    assert [(r["workload"], r["precision"]) for r in result["training"]] == every
    assert all(r["images_per_s"] > 0 for r in result["training"])
    assert 0 <= result["overhead"][0]["overhead_fraction"] < 1
    assert [r["step"] for r in result["emoji"]["rows"]] == [1]
    md = (tmp_path / "GPU.md").read_text()
    for heading in ("Sampling throughput", "full-resolution pass", "overhead", "Training", "FD"):
        assert heading in md
    assert "| cifar10 | 2 | bf16 | eager |" in md  # a ratio row
    # A second call adds to the first: its rows replace those of the same setup.
    argv = ["--smoke", "--device", "cpu", "--out", str(tmp_path), "--sections", "overhead"]
    again = bench.main([*argv, "--presets", "cifar10", "--append"])
    assert len(again["commands"]) == 2 and again["training"] == result["training"]
    assert len(again["overhead"]) == len(result["overhead"])  # replaced, not added
    assert again["overhead"][0] != result["overhead"][0]  # measured anew


class ReplayOnCPU(CUDAGraphed):
    """CUDAGraphed with the capture replaced: 'replay' reruns the network on the static
    inputs into the static output, as a graph would. It checks the bookkeeping around it."""

    def _check_device(self, x):
        pass

    def _record(self, static):
        out = self.network(*static)

        class Graph:
            def replay(self_graph):
                out.copy_(self.network(*static))

        return Graph(), out


def test_graph_replay_bookkeeping_samples_what_eager_does():
    process = UpsamplingProcess((0.5, 0.2, 1e-3), (0.1, 0.2, 0.3))
    net = ShuffleNet().eval()
    graphed = ReplayOnCPU(net)
    for seeds in (range(3), range(5, 8)):  # the second batch replays with new inputs
        noises = seeded_noises(process, (3, 16, 16), seeds)
        torch.testing.assert_close(
            sample_udpm(graphed, process, (3, 16, 16), noises=noises),
            sample_udpm(net, process, (3, 16, 16), noises=noises),
            rtol=0,
            atol=0,
        )
    assert len(graphed.graphs) == 3  # one per level size, reused by the second batch
    x, t = torch.randn(2, 3, 4, 4), torch.full((2,), 0.5)
    with torch.no_grad():
        first = graphed(x, t)
        graphed(x + 1, t)  # overwrites the static output ...
        assert torch.equal(first, net(x, t))  # ... but not what the first call returned
    with pytest.raises(UDPMError, match="under torch.no_grad"):
        graphed(x, t)
    with torch.no_grad(), pytest.raises(UDPMError, match="eval mode"):
        ReplayOnCPU(ShuffleNet())(x, t)  # dropout would replay one fixed mask
    few = ReplayOnCPU(net, max_graphs=1)
    with torch.no_grad():
        few(x, t), few(x, t)  # one shape: one graph, replayed
        with pytest.raises(UDPMError, match="more than 1 input shapes"):
            few(x[:1], t[:1])
