"""The CUDA path: bf16 training, CUDA against CPU sampling, peak memory, DDP over NCCL.

Marked ``gpu`` and skipped where CUDA is missing; on a GPU machine run them alone with
``pytest -m gpu tests/test_gpu.py``. Nothing here has a golden number: each test compares
two ways of computing the same thing, or checks a physical bound.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import udpm

from .test_train import tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def strict_fp32():
    """TF32 off, so CUDA float32 means float32 (TF32 keeps 10 mantissa bits, not 23)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def tiny_npz(tmp_path):
    path = tmp_path / "tiny.npz"
    images = np.random.default_rng(0).integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(16) % 3)
    return path


@pytest.mark.parametrize("method", ["udpm", "ddpm", "simple"])
def test_training_step_in_bf16_for_every_method(tmp_path, tiny_npz, method):
    from udpm.train.loop import Trainer

    extra = {"diffusion": {"process": {"T": 20}}} if method == "ddpm" else {}
    config = tiny_config(tiny_npz, method=method, device="cuda", amp="bf16", steps=3, **extra)
    trainer = Trainer(config, tmp_path / method, progress=False)
    G = trainer.method.generator
    dtypes = []
    G.stem.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    trainer.run()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the convolutions ran in bf16
    assert all(p.dtype == torch.float32 and p.is_cuda for p in G.parameters())  # fp32 master
    records = [
        json.loads(r) for r in (tmp_path / method / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(records) == 3 and all(np.isfinite(r["loss_g"]) for r in records)
    assert udpm.load(tmp_path / method).sample(2, seed=0).isfinite().all()


def test_sampling_on_cuda_equals_cpu(strict_fp32):
    """Same noise (drawn on the CPU per seed), same float32 arithmetic in another order:
    the images agree to 1e-3, an eighth of one 8-bit grey level (2/255)."""
    cpu = udpm.load().sample(8, seed=0)
    cuda = udpm.load(device="cuda").sample(8, seed=0)
    assert cuda.device.type == "cpu"  # the pipeline hands images back on the CPU
    torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-3)


def test_cuda_graph_replays_what_eager_computes(strict_fp32):
    pipe = udpm.load(device="cuda")
    graphed = pipe.accelerate(cuda_graph=True)
    first = graphed.sample(4, seed=0)
    # 3 level sizes, one graph each; the second run replays them with new inputs.
    assert len(graphed.network.graphs) == 3
    torch.testing.assert_close(graphed.sample(4, seed=5), pipe.sample(4, seed=5), rtol=0, atol=1e-4)
    torch.testing.assert_close(first, pipe.sample(4, seed=0), rtol=0, atol=1e-4)


def test_bf16_channels_last_compiled_sampling_on_cuda_agrees():
    """As on the CPU (tests/test_accel.py): a PSNR of at least 30 dB against fp32."""
    pipe = udpm.load(device="cuda")
    fast = pipe.accelerate(compile=True, channels_last=True, autocast_dtype=torch.bfloat16)
    a, b = pipe.sample(16, seed=0), fast.sample(16, seed=0)
    mse = ((a - b) ** 2).mean()
    assert 0 < mse and 10 * torch.log10(4 / mse) > 30


def test_bench_reports_peak_memory(tmp_path):
    from udpm.cli import main

    report = tmp_path / "bench.json"
    args = ["bench", "--device", "cuda", "--batches", "1,32", "--repeats", "1"]
    assert main([*args, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    small, large = result["peak_memory_mb_batch1"], result["peak_memory_mb_batch32"]
    total = torch.cuda.get_device_properties(0).total_memory / 2**20
    weights = result["parameters"] * 4 / 2**20
    assert weights < small <= large < total  # the weights are resident; more images, more memory
    assert result["ms_per_image_batch32"] < result["ms_per_image_batch1"]


def test_ddp_over_nccl_with_one_process(tmp_path, tiny_npz):
    """A DDP-wrapped generator over NCCL takes the same step as the plain one (world size
    1: the all-reduce averages one gradient), as ``Method.distribute`` wraps it."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from udpm.methods import get_method
    from udpm.train import distributed as udist

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    config = tiny_config(tiny_npz, method="ddpm", device="cuda", diffusion={"process": {"T": 20}})
    x0 = torch.rand(4, 3, 16, 16, device="cuda") * 2 - 1
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        assert udist._comm_device().type == "cuda"
        total = torch.ones(3, device="cuda")
        dist.all_reduce(total)
        assert total.tolist() == [1.0, 1.0, 1.0]
        steps = []
        for wrap in (False, True):
            torch.manual_seed(0)
            method = get_method("ddpm")(config, torch.device("cuda"))
            if wrap:
                method.nets = {"G": DDP(method.modules["G"], device_ids=[0])}
            method.step(x0, None, 0)
            steps.append(method.modules["G"].state_dict())
    finally:
        dist.destroy_process_group()
    for k in steps[0]:
        torch.testing.assert_close(steps[1][k], steps[0][k], rtol=1e-5, atol=1e-6, msg=k)


def test_training_with_compile_on_cuda_equals_eager(tmp_path, tiny_npz, strict_fp32):
    """``udpm train --compile`` with inductor on the GPU takes the eager steps.

    The first loss comes before any update, so it checks the compiled forward to float32
    rounding. Weights are checked to Adam's sign-flip bound: a gradient near zero may change
    sign under reordered sums, and Adam then moves that weight by up to ``lr`` the other way
    (learning rates 0.5 lr and lr in the two warm-up steps, so at most 3 lr apart).
    """
    from udpm.train.loop import Trainer

    network = {**tiny_config(tiny_npz).network, "dropout": 0.0}  # no dropout draws
    config = tiny_config(
        tiny_npz,
        method="ddpm",
        device="cuda",
        amp="fp32",
        steps=2,
        network=network,
        diffusion={"process": {"T": 20}},
    )
    runs, losses = [], []
    for compile in (False, True):
        out = tmp_path / str(compile)
        trainer = Trainer(config, out, progress=False, compile=compile)
        trainer.run()
        runs.append(trainer.method.generator.state_dict())
        records = (out / "metrics.jsonl").read_text().splitlines()
        losses.append([json.loads(r)["loss_g"] for r in records])
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-5)
    assert losses[1][1] == pytest.approx(losses[0][1], rel=1e-3)
    for k in runs[0]:
        torch.testing.assert_close(runs[1][k], runs[0][k], rtol=0, atol=3 * config.optim.lr, msg=k)
