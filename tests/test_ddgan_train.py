"""DDGAN's training class on tiny nets: z matters after training, lazy R1, two learning rates."""

import math

import pytest
import torch

from udpm.config import flat_config
from udpm.errors import UDPMError
from udpm.methods.ddgan import DDGANMethod, cosine_lr
from udpm.methods.registry import get_spec

TINY_G = dict(
    model_channels=8,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[],
    dropout=0.0,
    resolution=8,
    embedding_channels=16,
)
TINY_D = dict(model_channels=8, channel_mult=[1, 2])


def tiny_config(**settings):
    values = dict(T=2, z_dim=4, lazy_r1=2, decay="none")
    values.update(settings)
    return flat_config(
        method="ddgan",
        resolution=8,
        batch_size=4,
        steps=10,
        network=TINY_G,
        discriminator=TINY_D,
        **values,
    )


def tiny_method(**settings):
    torch.manual_seed(0)  # the same initial networks every time
    return DDGANMethod(tiny_config(**settings), "cpu")


def data(n=4):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1


def g_output(method, z):
    G = method.modules["G"]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return G(x, torch.full((2,), 0.75), z=z)


def test_generator_depends_on_z_after_a_few_steps():
    m = tiny_method(lr=2e-3)
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    # The zero-initialised output conv hides z (and everything else) at first.
    assert torch.equal(g_output(m, z1), g_output(m, z2))
    x0 = data()
    for step in range(4):
        logs = m.step(x0, None, step)
    assert math.isfinite(logs["loss_g"]) and math.isfinite(logs["loss_d"])
    assert (g_output(m, z1) - g_output(m, z2)).abs().max() > 1e-4


def test_lazy_r1_fires_on_the_right_steps():
    m = tiny_method(lazy_r1=3)
    x0 = data()
    fired = [step for step in range(7) if "r1" in m.step(x0, None, step)]
    assert fired == [0, 3, 6]
    off = tiny_method(r1_gamma=0.0, lazy_r1=1)
    assert "r1" not in off.step(x0, None, 0)


def test_two_learning_rates_with_cosine_decay():
    m = tiny_method(decay="cosine", lr_d=1e-3, lr_min=1e-5, lr=2e-3)
    lrs = []
    for step in (0, 5, 10):
        m.set_lr(step)
        lrs.append({k: o.param_groups[0]["lr"] for k, o in m.optimizers.items()})
    assert lrs[0] == {"G": 2e-3, "D": 1e-3}
    assert lrs[2] == {"G": pytest.approx(1e-5), "D": pytest.approx(1e-5)}
    assert lrs[1]["G"] == pytest.approx((2e-3 + 1e-5) / 2)
    assert m.optimizers["G"].defaults["betas"] == (0.5, 0.9)
    assert cosine_lr(0, 10, 1.0, 0.0, warmup=4) == pytest.approx(0.25)


def test_paper_settings_and_validation():
    s = flat_config(method="ddgan").settings
    assert (s.T, s.z_dim, s.r1_gamma, s.lazy_r1) == (4, 100, 0.02, 15)
    assert (s.optim.lr, s.lr_d, s.optim.betas, s.optim.decay) == (
        1.6e-4,
        1.25e-4,
        (0.5, 0.9),
        "cosine",
    )
    spec = get_spec("ddgan")
    spec.validate(tiny_config())
    with pytest.raises(UDPMError, match="lazy_r1"):
        spec.validate(tiny_config(lazy_r1=0))
    with pytest.raises(UDPMError, match="beta_min"):
        spec.validate(tiny_config(beta_min=30.0))


def test_state_round_trip_continues_exactly():
    """Stop after 2 steps, rebuild from the state, continue: the same weights as straight on."""
    x0 = data()
    straight = tiny_method(lazy_r1=2)
    for step in range(4):
        straight.step(x0, None, step)
    first = tiny_method(lazy_r1=2)
    for step in range(2):
        first.step(x0, None, step)
    state = first.state_dict()
    second = tiny_method(lazy_r1=2)
    second.load_state_dict(state)
    for step in range(2, 4):
        second.step(x0, None, step)
    for name in ("G", "D"):
        a, b = straight.modules[name].state_dict(), second.modules[name].state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name}.{key}")
