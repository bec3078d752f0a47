"""udpm.eval: the shipped feature network, FD/KID/precision/recall, the reference cache.

The checks are about behaviour the metrics must have, not golden numbers: two halves of one
data set are close, a degraded copy is far and further the more it is degraded, point
clouds with a known overlap give the known precision and recall.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance

from udpm.errors import UDPMError
from udpm.eval import inception, reference
from udpm.eval.compute import compute_metrics, extract_features
from udpm.eval.feature_training import (
    TrainOptions,
    accuracies,
    heldout_split,
    load_labelled,
    predict,
    train_feature_network,
)
from udpm.eval.features import (
    TorchmetricsFeature,
    feature_network_hash,
    load_feature_network,
    read_feature_metadata,
)
from udpm.eval.metrics import frechet_distance, kernel_inception_distance, precision_recall
from udpm.images import from_uint8

N_SUBSET = 600  # images per set in the image-level checks: enough for stable FD, fast on CPU


@pytest.fixture(scope="module")
def net():
    return load_feature_network("emoji32")


@pytest.fixture(scope="module")
def emoji32():
    images, labels, _ = load_labelled("emoji32")
    return images, labels


@pytest.fixture(scope="module")
def subset(emoji32):
    """2 × N_SUBSET distinct emoji32 images in [-1, 1], in random order."""
    images, _ = emoji32
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    return from_uint8(images[perm[: 2 * N_SUBSET]])


@pytest.fixture(scope="module")
def subset_features(net, subset):
    return extract_features(subset, net)


def box_blur(x, radius):
    """Mean over a (2r+1)² window, edges replicated."""
    k = 2 * radius + 1
    weight = torch.full((x.shape[1], 1, k, k), 1.0 / k**2)
    return F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), weight, groups=x.shape[1])


def add_noise(x, sigma, seed=0):
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + sigma * noise).clamp(-1, 1)


# ---------------------------------------------------------------------------------------
# The shipped feature network.


def test_feature_network_loads_with_stable_hash_and_shape(net, subset):
    meta = read_feature_metadata("emoji32")
    assert {"config", "data", "heldout_accuracy", "train_accuracy", "resize_mode"} <= set(meta)
    assert meta["config"]["resolution"] == 32
    # the hash recorded at training time is the hash of what loads now, and reloading agrees
    assert feature_network_hash(net) == meta["weights_sha256"]
    assert feature_network_hash(load_feature_network()) == feature_network_hash(net)
    features = net(subset[:8])
    assert features.shape == (8, net.num_features) and 128 <= net.num_features <= 256
    assert torch.isfinite(features).all()


def test_feature_network_resizes_and_accepts_grey(net, subset):
    x = subset[:16]
    big = F.interpolate(x, scale_factor=2, mode="nearest")
    assert net.resize_mode == "bilinear-antialias" == read_feature_metadata()["resize_mode"]
    small = F.interpolate(big, size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(net(big), net(small))
    assert net(big).shape == net(x).shape
    grey = x.mean(dim=1, keepdim=True)
    assert torch.allclose(net(grey), net(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(UDPMError, match="channels"):
        net(torch.zeros(2, 4, 32, 32))


def test_heldout_accuracy_is_far_above_chance(net, emoji32):
    images, labels = emoji32
    meta = read_feature_metadata("emoji32")
    options = meta["options"]
    _, heldout = heldout_split(labels, options["heldout_fraction"], options["seed"])
    assert 400 <= len(heldout) <= 700 and len(heldout) == meta["n_heldout"]
    acc = accuracies(predict(net, images[heldout]), labels[heldout])
    assert acc["accuracy"] == pytest.approx(meta["heldout_accuracy"], abs=0.01)
    chance = 1 / net.config.num_classes
    assert acc["balanced_accuracy"] > 4 * chance  # mean per-class recall; chance is 1/9
    assert acc["accuracy"] > meta["majority_fraction"] + 0.05  # beats "always the big class"


def test_training_is_deterministic_given_seed(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    images = (rng.random((60, 16, 16, 3)) * 60 + labels[:, None, None, None] * 80).astype(np.uint8)
    data = tmp_path / "tiny.npz"
    np.savez(data, images=images, labels=labels)
    options = TrainOptions(data=str(data), epochs=1, batch_size=16, widths=(8, 16), threads=1)
    first = train_feature_network(options, out=tmp_path / "a.safetensors")
    second = train_feature_network(options, out=tmp_path / "b.safetensors")
    assert first["weights_sha256"] == second["weights_sha256"]
    loaded = load_feature_network(tmp_path / "a.safetensors")
    assert feature_network_hash(loaded) == first["weights_sha256"]
    assert loaded(from_uint8(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))).shape == (2, 16)


def test_every_training_flag_is_documented():
    import argparse

    from udpm.commands.features import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    actions = [a for a in parser._actions if a.dest != "help"]
    assert {"data", "out", "seed", "epochs"} <= {a.dest for a in actions}
    assert all(a.help for a in actions)


# ---------------------------------------------------------------------------------------
# Fréchet distance and KID on images.


def test_fd_of_two_halves_is_small_next_to_a_degraded_set(net, subset, subset_features):
    a, b = subset_features[:N_SUBSET], subset_features[N_SUBSET:]
    halves = frechet_distance(a, b)
    blurred = extract_features(box_blur(subset[N_SUBSET:], 3), net)
    spread = frechet_distance(a, blurred)
    assert 0 <= halves < 0.2 * spread


def test_fd_grows_with_blur_and_with_noise(net, subset, subset_features):
    x, f = subset[:N_SUBSET], subset_features[:N_SUBSET]
    blur_fd = [frechet_distance(f, extract_features(box_blur(x, r), net)) for r in (1, 2, 3)]
    noise_fd = [
        frechet_distance(f, extract_features(add_noise(x, s), net)) for s in (0.1, 0.2, 0.4)
    ]
    assert blur_fd == sorted(blur_fd) and blur_fd[0] > 0
    assert noise_fd == sorted(noise_fd) and noise_fd[0] > 0


def test_fd_through_torchmetrics_images_equals_fd_on_features(net, subset, subset_features):
    """The image-level wrapper and the feature-level path compute the same number."""
    metric = FrechetInceptionDistance(feature=TorchmetricsFeature(net), normalize=True)
    metric.train()  # must not switch the network's BatchNorm to batch statistics
    metric.update((subset[:200] + 1) / 2, real=True)
    metric.update((subset[200:400] + 1) / 2, real=False)
    expected = frechet_distance(subset_features[:200], subset_features[200:400])
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-4)


def test_kid_is_near_zero_for_halves_and_deterministic(net, subset, subset_features):
    a, b = subset_features[:N_SUBSET], subset_features[N_SUBSET:]
    halves, _ = kernel_inception_distance(a, b, subsets=20)
    blurred = extract_features(box_blur(subset[N_SUBSET:], 3), net)
    far, _ = kernel_inception_distance(a, blurred, subsets=20)
    assert abs(halves) < 0.05 * far
    assert kernel_inception_distance(a, b, subsets=20) == kernel_inception_distance(
        a, b, subsets=20
    )


# ---------------------------------------------------------------------------------------
# Precision and recall on point clouds with known answers.


def _uniform(n, low, high, seed):
    g = torch.Generator().manual_seed(seed)
    low, high = torch.tensor(low), torch.tensor(high)
    return low + (high - low) * torch.rand(n, len(low), generator=g)


def test_precision_recall_identical_clouds():
    x = torch.randn(500, 8)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_precision_recall_half_support():
    real = _uniform(2000, [0.0, 0.0], [1.0, 1.0], seed=0)
    fake = _uniform(2000, [0.0, 0.0], [0.5, 1.0], seed=1)  # the left half of the square
    precision, recall = precision_recall(real, fake)
    assert precision > 0.97
    assert recall == pytest.approx(0.5, abs=0.05)


def test_precision_recall_disjoint_clouds():
    real = torch.randn(400, 4)
    fake = torch.randn(400, 4) + 100.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_precision_recall_mode_collapse():
    real = torch.randn(1000, 4)
    centres = real[:5]  # the generator only reproduces five real points, with tiny jitter
    fake = centres.repeat_interleave(100, dim=0) + 1e-3 * torch.randn(500, 4)
    precision, recall = precision_recall(real, fake)
    assert precision > 0.95
    assert recall < 0.05


def test_precision_recall_in_blocks_equals_whole(monkeypatch):
    import udpm.eval.metrics as metrics

    real, fake = torch.randn(300, 6), torch.randn(250, 6) * 1.3
    whole = precision_recall(real, fake)
    monkeypatch.setattr(metrics, "_BLOCK_ENTRIES", 1000)  # a few rows per cdist call
    assert precision_recall(real, fake) == whole


# ---------------------------------------------------------------------------------------
# compute_metrics and the reference cache.


def test_compute_metrics_caches_the_reference(net, subset, tmp_path):
    real, fake = subset[:300], box_blur(subset[300:600], 1)
    kwargs = dict(feature_net=net, reference_key="emoji-test", progress=False, cache_dir=tmp_path)
    first = compute_metrics(fake, real, **kwargs)
    assert {"fd", "kid_mean", "kid_std", "precision", "recall"} <= set(first)
    assert first["n_fake"] == first["n_real"] == 300
    assert first["feature_net_hash"] == feature_network_hash(net)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    # the second call needs no real images, and a generator of batches equals the tensor
    batches = (b for b in fake.split(64))
    second = compute_metrics(batches, None, **kwargs)
    assert second.keys() == first.keys()
    for key, value in first.items():
        assert second[key] == (value if isinstance(value, str) else pytest.approx(value, 1e-4))


def test_compute_metrics_rejects_bad_input(net, subset):
    with pytest.raises(UDPMError, match="unknown metric"):
        compute_metrics(subset[:10], subset[:10], metrics=("fd", "is"), feature_net=net)
    with pytest.raises(UDPMError, match=r"\[-1, 1\]"):
        compute_metrics(subset[:10] * 127.5 + 127.5, subset[:10], feature_net=net, progress=False)
    with pytest.raises(UDPMError, match="no real images"):
        compute_metrics(subset[:10], None, feature_net=net, progress=False)
    with pytest.raises(UDPMError, match="unknown feature network"):
        compute_metrics(subset[:10], subset[:10], feature_net="imagenet")


def test_dataset_identity_follows_content(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, images=np.zeros((2, 4, 4, 3), np.uint8))
    first = reference.dataset_identity(path)
    np.savez(path, images=np.ones((2, 4, 4, 3), np.uint8))
    assert reference.dataset_identity(path) != first and first.startswith("set-")
    assert reference.dataset_identity("emoji32").startswith("emoji32-")


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UDPM_CACHE", str(tmp_path))
    assert reference.default_cache_dir() == tmp_path / "reference"


# ---------------------------------------------------------------------------------------
# Standard FID is optional: without the extra or the weights, one clear line.


def test_fid_without_the_extra_says_how_to_install(monkeypatch, subset):
    monkeypatch.setattr(inception, "fidelity_available", lambda: False)
    with pytest.raises(UDPMError) as err:
        compute_metrics(subset[:10], subset[:10], metrics=("fid",), progress=False)
    message = str(err.value)
    assert message == inception.MISSING_EXTRA and "\n" not in message
    assert "pip install 'udpm[fid]'" in message and "--inception-weights PATH" in message


def test_fid_without_weights_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(inception, "fidelity_available", lambda: True)
    with pytest.raises(UDPMError, match="Inception weights not found: .*missing.pth"):
        inception.InceptionFID(inception_weights=tmp_path / "missing.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UDPMError, match="--inception-weights PATH"):
        inception.InceptionFID()
