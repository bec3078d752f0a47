"""Both latent-diffusion stages under torchrun (two gloo processes) equal one process.

The latent's scale is measured over the whole global batch, so every process sets the same
``s`` and ``m``, and they equal a single process's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import udpm
from udpm import checkpoint as ckpt
from udpm.train import distributed as dist
from udpm.train.loop import Trainer, train

from .test_distributed import assert_close, finished, launch_two, make_data
from .test_ldm import TINY_AE
from .test_train import TINY_G, tiny_config


def ae_config(data, **kw):
    values = dict(method="autoencoder", network=TINY_AE, perceptual="none", disc_weight=0.0)
    return tiny_config(data, **{**values, "batch_size": 8, "steps": 2, **kw})


def ldm_config(data, autoencoder, **kw):
    values = dict(method="ldm", autoencoder=str(autoencoder), T=20)
    values["network"] = dict(TINY_G, dropout=0.0)
    return tiny_config(data, **{**values, "batch_size": 8, "micro_batch": 2, "steps": 2, **kw})


def worker(work: Path, data: Path) -> None:
    """Run under torchrun with two processes: stage 1, then stage 2 on its model file."""
    torch.set_num_threads(1)
    context = dist.init_from_env("cpu")
    rank, world = context.rank, context.world_size
    ae = train(ae_config(data), work / "ae", progress=False)
    trainer = Trainer(
        ldm_config(data, ae), work / "ldm", progress=False, rank=rank, world_size=world
    )
    trainer.run()
    torch.save(trainer.method.state_dict()["modules"], work / f"ldm-rank{rank}.pt")
    dist.cleanup(context)
    finished(work, rank)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend")
    work = tmp_path_factory.mktemp("ldm-ddp")
    data = make_data(work / "data.npz")
    launch_two("tests.test_ldm_distributed", work, data)
    return work, data


def test_both_stages_on_two_processes_equal_one(tmp_path, two_processes):
    work, data = two_processes
    rank0, rank1 = (torch.load(work / f"ldm-rank{r}.pt") for r in (0, 1))
    assert_close(rank0, rank1, exact=True)  # the same scale and weights on every process
    ae_one = train(ae_config(data), tmp_path / "ae", progress=False)
    ae_two = ckpt.model_path(work / "ae", 2)
    # Compared by their reconstructions: the attention's key bias has a zero gradient in
    # exact arithmetic, so Adam turns its rounding noise into lr-sized weight differences.
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    recon = [udpm.load(p).network for p in (ae_one, ae_two)]
    recon = [ae.decode(ae.encode(x).mode()) for ae in recon]
    torch.testing.assert_close(recon[0], recon[1], rtol=1e-4, atol=1e-4)
    # Stage 2 of one process on the two-process autoencoder: the same global batches.
    train(ldm_config(data, ae_two, micro_batch=None), tmp_path / "ldm", progress=False)
    one = ckpt.load_state(ckpt.state_path(tmp_path / "ldm", 2))["method"]["modules"]
    assert float(rank0["G"]["latent_scale"]) != 1.0
    torch.testing.assert_close(one["G"]["latent_scale"], rank0["G"]["latent_scale"])
    torch.testing.assert_close(one["G"]["latent_mean"], rank0["G"]["latent_mean"])
    assert_close(one, rank0)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
