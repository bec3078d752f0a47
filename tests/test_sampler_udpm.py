"""The UDPM sampler: determinism given the latent, level shapes and clear errors."""

import pytest
import torch

from udpm.processes import UpsamplingProcess
from udpm.samplers import sample_udpm, seeded_noises


@pytest.mark.parametrize(
    "size, expected", [(32, [(4, 4), (8, 8), (16, 16)]), (64, [(8, 8), (16, 16), (32, 32)])]
)
def test_level_shapes(shuffle_net, size, expected):
    p = UpsamplingProcess()
    x, previews = sample_udpm(shuffle_net, p, (3, size, size), n=2, return_levels=True)
    assert shuffle_net.seen_shapes == expected
    assert x.shape == (2, 3, size, size)
    assert [tuple(v.shape) for v in previews] == [(2, 3, size, size)] * 3
    torch.testing.assert_close(previews[-1], x)


def test_deterministic_given_noises_and_seed(shuffle_net):
    p = UpsamplingProcess()
    noises = seeded_noises(p, (3, 32, 32), [5, 6, 7])
    a = sample_udpm(shuffle_net, p, (3, 32, 32), noises=noises)
    b = sample_udpm(shuffle_net, p, (3, 32, 32), noises=[e.clone() for e in noises])
    c = sample_udpm(shuffle_net, p, (3, 32, 32), n=3, seed=5)
    assert torch.equal(a, b) and torch.equal(a, c)
    # Per-image seeds: image 6 is the same alone as inside a batch.
    alone = sample_udpm(shuffle_net, p, (3, 32, 32), n=1, seed=6)
    torch.testing.assert_close(alone[0], a[1])
    # And the latent matters: changing one map changes the image.
    noises[0] = noises[0] + 1
    assert not torch.allclose(sample_udpm(shuffle_net, p, (3, 32, 32), noises=noises), a)


def test_sampler_follows_algorithm_2(shuffle_net):
    """Re-derive the three steps by hand from the process API."""
    p = UpsamplingProcess()
    noises = seeded_noises(p, (3, 32, 32), [0, 1])
    x = p.prior_sample(noises[2])
    for l in (3, 2, 1):
        h = shuffle_net(x, torch.full((2,), (l - 0.5) / 3))
        x = p.posterior_sample(x, h, l, noise=noises[l - 2] if l > 1 else None)
    torch.testing.assert_close(sample_udpm(shuffle_net, p, (3, 32, 32), noises=noises), x)


def test_errors(shuffle_net):
    p = UpsamplingProcess()
    with pytest.raises(ValueError, match=r"image size 36 is not divisible by 2\^3 = 8"):
        sample_udpm(shuffle_net, p, (3, 36, 36), n=1)
    noises = seeded_noises(p, (3, 32, 32), [0])
    with pytest.raises(ValueError, match="expected 3 noise maps, got 2"):
        sample_udpm(shuffle_net, p, (3, 32, 32), noises=noises[:2])
    noises[1] = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"noise map 2 has shape \(1, 3, 4, 4\), expected"):
        sample_udpm(shuffle_net, p, (3, 32, 32), noises=noises)
    with pytest.raises(ValueError, match="batch size"):
        sample_udpm(shuffle_net, p, (3, 32, 32))
