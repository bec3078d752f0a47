"""Latent-space tools: exact end points, unit variance, swaps, PCA, files, errors and CLI."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import udpm
from udpm import checkpoint as ckpt
from udpm.cli import main
from udpm.config import flat_config
from udpm.errors import UDPMError
from udpm.latent import (
    Latent,
    corner_weights,
    decode,
    grid_coordinates,
    image_pca,
    interpolate,
    interpolation_latents,
    mix_corners,
    mix_pair,
    model_hash,
    perturb,
    perturbation_pca,
    slerp,
    swap,
    swap_latents,
    variance_report,
)
from udpm.pipeline import Pipeline, build_network
from udpm.processes import UpsamplingProcess

TINY_G = dict(
    model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[], resolution=8
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions are ~100x slower with 2 threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_pipe(network, num_classes=0, method="udpm"):
    """An untrained 32 px pipeline around conftest's ShuffleNet (a fresh one: new weights)."""
    config = flat_config(resolution=32, method=method, class_conditional=bool(num_classes))
    meta = {"num_classes": num_classes}
    return Pipeline(type(network)(), UpsamplingProcess(), config, meta)


@pytest.fixture
def pipe(shuffle_net):
    return tiny_pipe(shuffle_net)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two untrained tiny UDPM model files (16 px) with different random weights (the UNet's
    zero-initialised output layer included, so that different latents give different images)."""
    folder = tmp_path_factory.mktemp("ckpt")
    config = flat_config(resolution=16, network=TINY_G, perceptual="none")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        network = build_network(config)
        with torch.no_grad():
            for p in network.parameters():
                p.add_(0.2 * torch.randn_like(p))
        meta = {"kind": "generator", "method": "udpm", "step": seed, "config": config.to_dict()}
        paths.append(folder / f"model-{seed}.safetensors")
        ckpt.save_model(paths[-1], network.state_dict(), meta)
    return paths


# --- the mixing arithmetic ------------------------------------------------------------


def test_corner_weights_keep_unit_variance_exactly():
    coords = grid_coordinates(7)
    assert coords[0] == 1.0 and coords[-1] == 0.0
    assert all(a > b for a, b in zip(coords, coords[1:]))
    for eta in coords:
        for delta in coords:
            assert math.isclose(sum(w * w for w in corner_weights(eta, delta)), 1.0, abs_tol=1e-12)
    # Which corner is which: η = δ = 1 is e1 (top left), δ = 0 is e2, η = 0 is e3.
    assert corner_weights(1, 1) == (1, 0, 0, 0) and corner_weights(1, 0) == (0, 1, 0, 0)
    assert corner_weights(0, 1) == (0, 0, 1, 0) and corner_weights(0, 0) == (0, 0, 0, 1)


def test_mixes_of_iid_maps_have_unit_variance():
    gen = torch.Generator().manual_seed(0)
    e = [torch.randn(40_000, generator=gen) for _ in range(4)]
    for eta in grid_coordinates(5):
        for delta in grid_coordinates(5):
            assert abs(mix_corners(e, eta, delta).var().item() - 1) < 0.03
    for t in torch.linspace(0, 1, 5).tolist():
        assert abs(slerp(e[0], e[1], t).var().item() - 1) < 0.03
        assert abs(mix_pair(e[0], e[1], math.cos(math.pi / 2 * t)).var().item() - 1) < 0.03


def test_slerp_keeps_the_norm_of_equal_norm_maps():
    a, b = torch.randn(500, dtype=torch.float64), torch.randn(500, dtype=torch.float64)
    b = b * a.norm() / b.norm()
    for t in (0.1, 0.5, 0.9):
        assert math.isclose(slerp(a, b, t).norm().item(), a.norm().item(), rel_tol=1e-9)


# --- interpolation, swap, perturbation --------------------------------------------------


@pytest.mark.parametrize("slerp_mode", [False, True])
def test_interpolation_end_points_are_exact(pipe, slerp_mode):
    # The end latents are bit for bit the given ones; the images are compared to 1e-6
    # because a convolution's last bit may depend on the batch it runs in.
    lats = [Latent.from_seed(pipe, s) for s in (1, 2, 3, 4)]
    ends = decode(pipe, lats)
    row_latents = interpolation_latents(lats[:2], steps=5, slerp=slerp_mode)
    for got, want in ((row_latents[0], lats[0]), (row_latents[-1], lats[1])):
        assert all(torch.equal(x, y) for x, y in zip(got.noises, want.noises))
    row = interpolate(pipe, lats[:2], steps=5, slerp=slerp_mode)
    assert row.shape == (5, 3, 32, 32)
    torch.testing.assert_close(row[[0, -1]], ends[:2], atol=1e-6, rtol=0)
    grid = interpolate(pipe, lats, steps=4, slerp=slerp_mode)
    assert grid.shape == (4, 4, 3, 32, 32)
    corners = torch.stack([grid[0, 0], grid[0, -1], grid[-1, 0], grid[-1, -1]])
    torch.testing.assert_close(corners, ends, atol=1e-6, rtol=0)
    assert not torch.allclose(grid[1, 1], grid[0, 0])


def test_row_is_the_top_row_of_the_grid(pipe):
    row = interpolate(pipe, [1, 2], steps=4)
    grid = interpolate(pipe, [1, 2, 3, 4], steps=4)
    torch.testing.assert_close(row, grid[0], atol=1e-6, rtol=0)
    assert torch.equal(row, interpolate(pipe, [1, 2], steps=4))  # deterministic


def test_swap(pipe):
    a, b = Latent.from_seed(pipe, 5), Latent.from_seed(pipe, 6)
    swapped = swap_latents(a, b)
    for l, lat in enumerate(swapped):
        for m in range(3):
            assert torch.equal(lat.noises[m], (a if m == l else b).noises[m])
    row = swap(pipe, a, b)
    assert row.shape == (5, 3, 32, 32)
    torch.testing.assert_close(row[[0, -1]], decode(pipe, [a, b]), atol=1e-6, rtol=0)
    # B with its own maps at every level is B.
    same = swap(pipe, b, b)
    torch.testing.assert_close(same, same[-1:].expand_as(same), atol=1e-6, rtol=0)


def test_latent_from_seed_is_the_sampled_image(pipe):
    torch.testing.assert_close(
        decode(pipe, [Latent.from_seed(pipe, 9)]), pipe.sample(1, seed=9), atol=1e-6, rtol=0
    )


def test_perturbation(pipe):
    lat = Latent.from_seed(pipe, 0)
    a = perturb(pipe, lat, level=2, gamma=0.8, n=3, seed=1)
    assert torch.equal(a, perturb(pipe, lat, level=2, gamma=0.8, n=3, seed=1))
    torch.testing.assert_close(a[:2], perturb(pipe, lat, 2, 0.8, n=2, seed=1), atol=1e-6, rtol=0)
    assert not torch.allclose(a[0], a[1])
    same = perturb(pipe, lat, level=1, gamma=1.0, n=2)
    torch.testing.assert_close(same, decode(pipe, [lat, lat]), atol=1e-6, rtol=0)


def test_image_pca_matches_the_covariance_eigendecomposition():
    x = torch.randn(200, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    components, eigenvalues, total = image_pca(x, k=3)
    values, vectors = torch.linalg.eigh(torch.cov(x.T))
    torch.testing.assert_close(eigenvalues, values.flip(0)[:3])
    assert math.isclose(total, values.sum().item(), rel_tol=1e-9)
    overlap = (components @ vectors.flip(1)[:, :3]).abs()
    torch.testing.assert_close(overlap, torch.eye(3, dtype=torch.float64))


def test_perturbation_pca(pipe):
    results = [perturbation_pca(pipe, 3, l, gamma=0.9, n=16, k=4) for l in (1, 2, 3)]
    for r in results:
        flat = r.components.flatten(1).double()
        torch.testing.assert_close(flat @ flat.T, torch.eye(4, dtype=torch.float64))
        assert torch.all(r.explained_variance[:-1] >= r.explained_variance[1:])
        assert 0 < r.explained_variance_ratio.sum() <= 1 + 1e-9
        assert r.display().abs().amax() == 1
    report = variance_report(results)
    assert math.isclose(sum(row["share"] for row in report["levels"]), 1.0)


def test_class_conditional_latents_keep_their_class(shuffle_net):
    pipe = tiny_pipe(shuffle_net, num_classes=3)
    lat = Latent.from_seed(pipe, 4)
    assert lat.class_label == int(pipe.class_labels(1, None, 4)[0])
    assert Latent.from_seed(pipe, 4, class_label=2).class_label == 2
    row = interpolation_latents([Latent.from_seed(pipe, 4, 0), Latent.from_seed(pipe, 5, 1)], 4)
    assert [r.class_label for r in row] == [0, 0, 1, 1]


# --- files and errors ------------------------------------------------------------------


def test_latent_file_round_trip_and_checks(pipe, tmp_path):
    lat = Latent.from_seed(pipe, 3)
    path = lat.save(tmp_path / "a.latent.safetensors")
    back = Latent.load(path, pipe)
    assert back.seed == 3 and back.model_sha256 == model_hash(pipe)
    assert all(torch.equal(x, y) for x, y in zip(back.noises, lat.noises))
    other = tiny_pipe(pipe.network)  # fresh random weights
    with pytest.raises(UDPMError, match="made with another checkpoint"):
        Latent.load(path, other)
    Latent.load(path, other, check_hash=False)
    Latent(lat.noises[:2]).save(tmp_path / "short.latent.safetensors")
    with pytest.raises(UDPMError, match="has 2 noise maps, this model needs 3"):
        Latent.load(tmp_path / "short.latent.safetensors", pipe)
    Latent([lat.noises[0], lat.noises[0], lat.noises[2]]).save(tmp_path / "bad.latent.safetensors")
    with pytest.raises(
        UDPMError, match=r"noise map 2 has shape \(3, 16, 16\), expected \(3, 8, 8\)"
    ):
        Latent.load(tmp_path / "bad.latent.safetensors", pipe)
    (tmp_path / "junk.latent.safetensors").write_bytes(b"not a file")
    with pytest.raises(UDPMError, match="not a readable safetensors file"):
        Latent.load(tmp_path / "junk.latent.safetensors")
    with pytest.raises(UDPMError, match="neither an integer seed nor an existing latent file"):
        interpolate(pipe, [1, tmp_path / "missing.latent.safetensors"])


def test_bad_inputs_give_clear_errors(pipe):
    for gamma in (1.5, -0.1, float("nan")):
        with pytest.raises(UDPMError, match="gamma must be in"):
            perturb(pipe, 0, level=1, gamma=gamma)
    with pytest.raises(UDPMError, match="level must be in 1..3, got 4"):
        perturb(pipe, 0, level=4, gamma=0.5)
    for count in (1, 3, 5):
        with pytest.raises(UDPMError, match=f"2 latents .* or 4 .*, got {count}"):
            interpolate(pipe, list(range(count)))
    with pytest.raises(UDPMError, match="at least 2 steps"):
        interpolate(pipe, [0, 1], steps=1)
    with pytest.raises(UDPMError, match="need a UDPM checkpoint"):
        swap(tiny_pipe(pipe.network, method="ddpm"), 0, 1)


# --- the command line --------------------------------------------------------------------


def png(path):
    return np.asarray(Image.open(path))


def test_cli_sample_save_latents_reproduce_images(checkpoints, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(checkpoints[0]), "--out", str(out), "--n", "2",
                 "--seed", "5", "--save-latents"]) == 0  # fmt: skip
    pipe = udpm.load(checkpoints[0])
    for seed in (5, 6):
        lat = Latent.load(out / f"seed{seed:06d}.latent.safetensors", pipe)
        assert lat.seed == seed
        swap_dir = tmp_path / f"w{seed}"
        # The latent file decodes to the PNG written by 'udpm sample', through another command.
        swap_args = [str(out / f"seed{seed:06d}.latent.safetensors")] * 2
        assert main(["swap", *swap_args, "--checkpoint", str(checkpoints[0]),
                     "--out", str(swap_dir)]) == 0  # fmt: skip
        assert np.array_equal(
            png(swap_dir / "swap.png")[2:18, 2:18], png(out / f"seed{seed:06d}.png")
        )


def test_cli_commands_write_pictures(checkpoints, tmp_path, capsys):
    ck = ["--checkpoint", str(checkpoints[0])]
    assert (
        main(["interpolate", "1", "2", "--steps", "3", "--gif", "--out", str(tmp_path / "r"), *ck])
        == 0
    )
    assert Image.open(tmp_path / "r" / "interpolation.png").size == (3 * 18 + 2, 20)
    assert Image.open(tmp_path / "r" / "interpolation.gif").n_frames == 4
    assert main(["interpolate", "1", "2", "3", "4", "--steps", "3", "--slerp",
                 "--out", str(tmp_path / "g"), *ck]) == 0  # fmt: skip
    assert Image.open(tmp_path / "g" / "interpolation.png").size == (56, 56)
    assert main(["swap", "1", "2", "--out", str(tmp_path / "w"), *ck]) == 0
    assert Image.open(tmp_path / "w" / "swap.png").size == (5 * 18 + 2, 20)
    assert main(["perturb", "3", "--n", "2", "--pca", "2", "--pca-samples", "6", "--json",
                 "--out", str(tmp_path / "p"), *ck]) == 0  # fmt: skip
    assert Image.open(tmp_path / "p" / "perturb.png").size == (3 * 18 + 2, 3 * 18 + 2)
    assert Image.open(tmp_path / "p" / "pca.png").size == (2 * 18 + 2, 3 * 18 + 2)
    report = json.loads((tmp_path / "p" / "pca.json").read_text())
    assert [row["level"] for row in report["levels"]] == [1, 2, 3]
    assert math.isclose(sum(row["share"] for row in report["levels"]), 1.0)
    assert "share of variance" in capsys.readouterr().out


def test_cli_errors(checkpoints, tmp_path, capsys):
    ck = ["--checkpoint", str(checkpoints[0]), "--out", str(tmp_path)]
    assert main(["perturb", "0", "--gamma", "1.5", *ck]) == 1
    assert "udpm perturb: error: gamma must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert main(["interpolate", "0", "1", "2", *ck]) == 1
    assert "got 3" in capsys.readouterr().err
    other = Latent.from_seed(udpm.load(checkpoints[1]), 0).save(tmp_path / "o.latent.safetensors")
    assert main(["swap", str(other), "1", *ck]) == 1
    err = capsys.readouterr().err
    assert "made with another checkpoint" in err and len(err.strip().splitlines()) == 1
    assert main(["swap", str(other), "1", "--any-checkpoint", *ck]) == 0
