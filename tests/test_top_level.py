"""The top-level collapse probe (benchmarks/top_level.py) and the ablation's committed rows."""

import json
from pathlib import Path

import pytest
import torch

from .test_curves import _load  # loads a benchmarks/ script as a module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe():
    return _load("top_level")


def test_scores_see_collapse_and_agree_with_the_data_itself(probe):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(800, 1, 2, 2, generator=g) * 2 - 1  # few pixels: estimates settle
    same = probe.score(real[:400], real[400:])
    assert same["fd_px"] < 0.5 and same["recall"] > 0.8 and 0.9 < same["nn_ratio"] < 1.1
    modes = real[:4].repeat(100, 1, 1, 1) + 0.01 * torch.randn(400, 1, 2, 2, generator=g)
    collapsed = probe.score(modes, real[400:])
    assert collapsed["nn_ratio"] < 0.1 and collapsed["recall"] < 0.05
    assert collapsed["fd_px"] > 10 * same["fd_px"]


def test_top_images_are_the_samplers_first_call_scaled_to_the_data_range(probe):
    import udpm
    from udpm.samplers.udpm import sample_udpm

    pipe = udpm.load()
    process, L = pipe.process, pipe.process.levels
    top = probe.top_images(pipe, 3)
    assert top.shape == (3, 3, 8, 8)
    calls = []

    def recording(x, t, c):
        calls.append(pipe.network(x, t, c))
        return calls[-1]

    sample_udpm(recording, process, pipe.image_shape, n=3, seed=0, device="cpu")
    torch.testing.assert_close(top, calls[0] / process.operator.sum ** (L - 1))
    constant = probe.top_real(pipe, torch.ones(1, 3, 32, 32))
    torch.testing.assert_close(constant, torch.ones(1, 3, 8, 8))  # H² / sum(w)² keeps it


def test_ablation_report_keeps_committed_rows_when_the_cache_is_gone(tmp_path, monkeypatch):
    ablation = _load("udpm_ablation")
    monkeypatch.setattr(ablation, "CACHE", tmp_path)
    committed = json.loads((ROOT / "benchmarks" / "ablation.json").read_text())["rows"]
    name = committed[0]["variant"]
    assert ablation.cached_or_committed(name) == committed[0]
    (tmp_path / f"row-{name}.json").write_text(json.dumps({"variant": name, "fd": 1.0}))
    assert ablation.cached_or_committed(name)["fd"] == 1.0  # this machine's row first
    assert ablation.cached_or_committed("never-run") is None
