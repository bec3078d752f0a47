import pytest
import torch

from udpm.errors import UDPMError
from udpm.networks import DISC_PRESETS, UNET_PRESETS, Discriminator, UNet, count_parameters
from udpm.networks.discriminator import minibatch_std
from udpm.networks.layers import Resample, SelfAttention

TINY_UNET = dict(
    model_channels=8,
    channel_mult=(1, 2, 2),
    num_blocks=1,
    attn_resolutions=(8,),
    dropout=0.0,
    resolution=16,
    embedding_channels=16,
)
TINY_DISC = dict(model_channels=8, channel_mult=(1, 2, 2, 2), resolution=32, num_levels=3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These nets are tiny: on a shared 2-core machine a second OpenMP thread mostly waits
    # for the first, and slows each conv by 10-100x when another process holds a core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed(net, scale=0.1):
    """The same net with every parameter moved off its (partly zero) initial value."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("out_factor", [1, 2])
@pytest.mark.parametrize("size", [(4, 4), (8, 8), (16, 16), (32, 32), (8, 12)])
def test_unet_output_shape(out_factor, size):
    net = UNet(out_factor=out_factor, **TINY_UNET)
    y = net(torch.randn(2, 3, *size), torch.tensor([0.1, 0.9]))
    assert y.shape == (2, 3, size[0] * out_factor, size[1] * out_factor)


def test_unet_starts_at_zero_and_rejects_bad_sizes():
    net = UNet(**TINY_UNET)
    assert torch.equal(net(torch.randn(1, 3, 8, 8), 0.5), torch.zeros(1, 3, 16, 16))
    with pytest.raises(UDPMError, match="divisible by 4"):
        net(torch.randn(1, 3, 6, 8), 0.5)
    with pytest.raises(UDPMError, match="expected"):
        net(torch.randn(1, 1, 8, 8), 0.5)


def test_attention_placed_at_nominal_sizes():
    def n_attn(**kw):
        net = UNet(**{**TINY_UNET, "num_blocks": 2, **kw})
        return sum(isinstance(m, SelfAttention) for m in net.modules())

    # Always one at the bottom; per listed level: num_blocks in the encoder, 1 in the decoder.
    assert n_attn(attn_resolutions=()) == 1
    assert n_attn(attn_resolutions=(8,)) == 1 + 3
    assert n_attn(attn_resolutions=(16, 4, 2)) == 1 + 3 + 3
    assert n_attn(attn_resolutions=(8,), resolution=32) == 1 + 3  # now level 2 is "8"


@pytest.mark.parametrize("embedding", ["fourier", "positional"])
def test_unet_depends_on_t_and_class(embedding):
    net = perturbed(UNet(num_classes=3, embedding=embedding, **TINY_UNET))
    x = torch.randn(2, 3, 8, 8)
    zeros = torch.zeros(2, dtype=torch.long)
    base = net(x, 0.5, zeros)
    assert not torch.allclose(base, net(x, 0.6, zeros), atol=1e-4)
    assert not torch.allclose(base, net(x, 0.5, zeros + 1), atol=1e-4)
    # A scalar t is broadcast, and each sample sees its own t and label only.
    assert torch.allclose(base, net(x, torch.tensor([0.5, 0.5]), zeros))
    mixed = net(x, torch.tensor([0.5, 0.6]), torch.tensor([0, 1]))
    assert torch.allclose(mixed[0], base[0], atol=1e-5)
    assert torch.allclose(mixed[1], net(x[1:], 0.6, zeros[1:] + 1)[0], atol=1e-5)
    with pytest.raises(UDPMError, match="class_labels"):
        net(x, 0.5)


def test_unet_gradients_reach_every_parameter():
    net = perturbed(UNet(num_classes=2, **{**TINY_UNET, "dropout": 0.1})).train()
    net(torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([0, 1])).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unet_eval_deterministic_train_uses_dropout():
    net = perturbed(UNet(**{**TINY_UNET, "dropout": 0.5}))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x, 0.3), net(x, 0.3))
    net.train()
    assert not torch.allclose(net(x, 0.3), net(x, 0.3))


def test_unet_state_dict_round_trip():
    # The Fourier frequencies are random: they must travel with the weights.
    net = perturbed(UNet(**TINY_UNET))
    torch.manual_seed(123)
    copy = UNet(**TINY_UNET).eval()
    copy.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(net(x, 0.4), copy(x, 0.4))


def test_resample_shapes_and_constants():
    x = torch.ones(1, 2, 8, 8)
    down, up = Resample("down")(x), Resample("up")(x)
    assert down.shape == (1, 2, 4, 4) and up.shape == (1, 2, 16, 16)
    assert Resample("down")(torch.ones(1, 1, 2, 2)).shape == (1, 1, 1, 1)
    # Away from the zero-padded border a constant stays constant.
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))


@pytest.mark.parametrize(
    "name, paper_millions",
    [("cifar10", 57.7), ("ffhq64", 65.4), ("afhqv2-64", 65.4)],
)
def test_unet_presets_match_paper(name, paper_millions):
    with torch.device("meta"):
        n = count_parameters(UNet(**UNET_PRESETS[name]))
    assert abs(n / 1e6 - paper_millions) / paper_millions < 0.05, n


@pytest.mark.parametrize(
    "name, paper_millions",
    [("cifar10", 19.0), ("ffhq64", 24.0), ("afhqv2-64", 24.0)],
)
def test_disc_presets_match_paper(name, paper_millions):
    with torch.device("meta"):
        n = count_parameters(Discriminator(**DISC_PRESETS[name]))
    assert abs(n / 1e6 - paper_millions) / paper_millions < 0.05, n


def test_cpu_presets_are_small_and_run():
    unet = UNet(**UNET_PRESETS["emoji32-cpu"])
    disc = Discriminator(**DISC_PRESETS["emoji32-cpu"])
    # Small enough for 2 CPU cores (the pretrained model was trained on one such machine).
    assert 0.5e6 <= count_parameters(unet) <= 3e6
    assert 0.1e6 <= count_parameters(disc) <= 1.5e6

    for size in (16, 8, 4):  # the three UDPM levels of a 32px image
        assert unet(torch.randn(2, 3, size, size), 0.5).shape == (2, 3, 2 * size, 2 * size)
        assert disc(torch.randn(2, 3, 2 * size, 2 * size), 0.5).shape == (2,)


def test_count_parameters():
    assert count_parameters(torch.nn.Linear(3, 4)) == 16
    with torch.device("meta"):
        assert count_parameters(torch.nn.Conv2d(2, 5, 3)) == 2 * 5 * 9 + 5


@pytest.mark.parametrize("size", [32, 16, 8])
def test_disc_logits_per_level(size):
    disc = Discriminator(**TINY_DISC)
    assert disc(torch.randn(5, 3, size, size), torch.full((5,), 0.5)).shape == (5,)


def test_disc_five_stages_on_64px_levels():
    disc = Discriminator(**{**TINY_DISC, "channel_mult": (1, 2, 2, 2, 2), "resolution": 64})
    for size in (64, 32, 16):
        assert disc(torch.randn(4, 3, size, size), 0.5).shape == (4,)
    with pytest.raises(UDPMError, match="halvings"):
        Discriminator(**{**TINY_DISC, "channel_mult": (1, 2, 2, 2, 2)})


def test_disc_conditioning_gradients_and_determinism():
    disc = perturbed(Discriminator(num_classes=3, dropout=0.3, **TINY_DISC), scale=0.02)
    x = torch.randn(4, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 0])
    logits = disc(x, 0.5, labels)
    assert torch.equal(logits, disc(x, 0.5, labels))
    assert not torch.allclose(logits, disc(x, 0.8, labels))
    assert not torch.allclose(logits, disc(x, 0.5, (labels + 1) % 3))
    # R1 needs a double backward through D; every parameter must receive gradient.
    disc.train()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x, 0.5, labels).sum(), x, create_graph=True)
    (grad.square().sum() + disc(x, 0.2, labels).mean()).backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_minibatch_std():
    h = torch.randn(1, 2, 3, 3).expand(6, 2, 3, 3)
    out = minibatch_std(h)
    assert out.shape == (6, 3, 3, 3)
    assert torch.allclose(out[:, 2], torch.full((6, 3, 3), 1e-4))  # identical samples
    # Groups are samples i, i + N/g, ...: with N = 6, g = 3, samples 0, 2, 4 share a value.
    h = torch.randn(6, 2, 3, 3)
    std = minibatch_std(h)[:, 2, 0, 0]
    expected = (h[0::2].var(0, unbiased=False) + 1e-8).sqrt().mean()
    assert torch.allclose(std[0::2], expected.expand(3))
    assert minibatch_std(torch.randn(5, 2, 1, 1)).shape == (5, 3, 1, 1)  # prime N: g = 1


# --- DDGAN's latent input ----------------------------------------------------------------


def test_unet_without_z_has_no_new_parameters():
    plain, explicit = UNet(**TINY_UNET), UNet(z_dim=0, **TINY_UNET)
    assert list(plain.state_dict()) == list(explicit.state_dict())
    with_z = UNet(z_dim=5, **TINY_UNET)
    extra = set(with_z.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("z_map.") for k in extra)


def test_unet_depends_on_z_per_sample():
    net = perturbed(UNet(z_dim=5, out_factor=1, **TINY_UNET))
    x, z = torch.randn(2, 3, 8, 8), torch.randn(2, 5)
    base = net(x, 0.5, z=z)
    assert not torch.allclose(base, net(x, 0.5, z=z.flip(0)), atol=1e-4)
    other = torch.stack([z[0], torch.randn(5)])
    torch.testing.assert_close(net(x, 0.5, z=other)[0], base[0])  # sample 0 sees its own z only
    with pytest.raises(UDPMError, match="z missing"):
        net(x, 0.5)
    with pytest.raises(UDPMError, match="not expected"):
        UNet(**TINY_UNET)(x, 0.5, z=z)


def test_tanh_output_is_bounded():
    net = perturbed(UNet(out_factor=1, out_activation="tanh", **TINY_UNET), scale=3.0)
    raw = perturbed(UNet(out_factor=1, **TINY_UNET), scale=0.0)
    raw.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 8, 8) * 10
    torch.testing.assert_close(net(x, 0.5), torch.tanh(raw(x, 0.5)))
    assert raw(x, 0.5).abs().max() > 1  # so the bound is doing something
    with pytest.raises(UDPMError, match="out_activation"):
        UNet(out_activation="relu", **TINY_UNET)


def test_discriminator_judges_pairs():
    """DDGAN's D: 2C input channels, all at full size (num_levels=1), time-conditioned."""
    D = perturbed(Discriminator(image_channels=6, **{**TINY_DISC, "num_levels": 1}))
    pair = torch.randn(4, 6, 32, 32)
    logits = D(pair, torch.full((4,), 0.375))
    assert logits.shape == (4,)
    assert not torch.allclose(logits, D(pair, torch.full((4,), 0.875)), atol=1e-4)
