"""H = S_γ W: adjointness, Lemma 1, the fast box path and the support check."""

import pytest
import torch

from udpm.operators import Downsample


def random_kernel(factor, generator):
    return torch.rand(factor, factor, generator=generator, dtype=torch.float64) + 0.1


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("box", [True, False])
def test_adjoint_identity(factor, box):
    gen = torch.Generator().manual_seed(factor)
    op = Downsample(factor, None if box else random_kernel(factor, gen))
    x = torch.randn(2, 3, 4 * factor, 2 * factor, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 3, 4, 2, generator=gen, dtype=torch.float64)
    lhs = (op(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize("factor", [2, 3])
def test_lemma1_h_ht_is_scaled_identity(factor):
    gen = torch.Generator().manual_seed(1)
    kernel = random_kernel(factor, gen)
    op = Downsample(factor, kernel)
    y = torch.randn(1, 2, 5, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(op(op.adjoint(y)), (kernel**2).sum() * y)
    assert op.norm_sq == pytest.approx(float((kernel**2).sum()))


@pytest.mark.parametrize("factor", [2, 3])
def test_box_fast_path_equals_general_path(factor):
    fast = Downsample(factor)
    general = Downsample(factor, torch.full((factor, factor), 1.0 / factor))
    assert fast.is_box and not general.is_box
    x = torch.randn(2, 3, 6 * factor, 6 * factor, dtype=torch.float64)
    y = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(fast(x), general(x))
    torch.testing.assert_close(fast.adjoint(y), general.adjoint(y))


def test_default_box_matches_design_formulas():
    op = Downsample(2)
    x = torch.randn(1, 1, 4, 4)
    torch.testing.assert_close(op(x), 2 * torch.nn.functional.avg_pool2d(x, 2))
    assert op.norm_sq == pytest.approx(1.0) and op.sum == pytest.approx(2.0)


def test_projector_is_idempotent_and_symmetric():
    op = Downsample(2, torch.tensor([[0.3, 0.9], [0.2, 0.5]]))
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    v = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(op.project(op.project(x)), op.project(x))
    torch.testing.assert_close((op.project(x) * v).sum(), (x * op.project(v)).sum())


def test_zero_padded_kernel_with_small_support_is_accepted():
    padded = torch.zeros(5, 5)
    padded[1:3, 2:4] = 0.5
    op = Downsample(2, padded)
    torch.testing.assert_close(op.kernel, torch.full((2, 2), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(3, 3), (2, 3), (5, 1)])
def test_larger_support_is_refused(shape):
    with pytest.raises(ValueError, match="support .* larger than the factor 2"):
        Downsample(2, torch.ones(shape))


def test_bad_factor_and_size():
    with pytest.raises(ValueError, match="integer >= 2"):
        Downsample(1)
    with pytest.raises(ValueError, match="not divisible by the factor 2"):
        Downsample(2)(torch.zeros(1, 1, 5, 4))


def test_dtype_and_batch_preserved():
    op = Downsample(2, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(3, 4, 8, 8).to(dtype)
        assert op(x).dtype == dtype and op(x).shape == (3, 4, 4, 4)
        assert op.adjoint(op(x)).shape == x.shape
