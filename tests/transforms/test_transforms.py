"""Every registered flow layer against autograd: log|det J|, inverse, batch shapes, stability."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_nf.transforms import (
    MADE,
    AffineAutoregressive,
    NotInvertibleError,
    Planar,
    available_transforms,
    make_transform,
)

# small networks keep the registry-wide tests fast; layers without a network take no config
HIDDEN = {
    "iaf": {"hidden_dims": (7, 5)},
    "maf": {"hidden_dims": (7, 5)},
    "additive_coupling": {"hidden_dims": (7, 5)},
    "affine_coupling": {"hidden_dims": (7, 5)},
    "spline_coupling": {"hidden_dims": (7,), "num_bins": 4, "bound": 2.0},
    "spline_autoregressive": {"hidden_dims": (7,), "num_bins": 4, "bound": 2.0},
}

# the inverse of a spline autoregressive layer (IAF direction) is a D-pass sequential solve whose Jacobian
# autograd builds through all D passes: cap its dimension to keep this test fast
MAX_DIM = {"spline_autoregressive": 16}


def _make(name: str, dim: int, dtype=torch.float64, perturb: float = 0.1, **cfg) -> torch.nn.Module:
    t = make_transform(name, dim, **{**HIDDEN.get(name, {}), **cfg}).to(dtype)
    with torch.no_grad():  # move away from the (exact) identity initialisation
        for p in t.parameters():
            p.add_(perturb * torch.randn_like(p))
    return t


def _jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    jac = torch.autograd.functional.jacobian(fn, x, vectorize=True)
    return torch.linalg.slogdet(jac).logabsdet


def _check_against_autograd(t, dim: int) -> None:
    x = torch.randn(dim, dtype=torch.float64)
    y, ladj = t.forward_and_log_det(x)
    expected = _jacobian_logdet(lambda v: t.forward_and_log_det(v)[0], x)
    torch.testing.assert_close(ladj, expected, rtol=1e-7, atol=1e-7)
    # the torch.distributions API agrees with the fused call
    torch.testing.assert_close(t.log_abs_det_jacobian(x, t(x)), expected, rtol=1e-7, atol=1e-7)
    if t.has_inverse:
        x_back, ladj_inv = t.inverse_and_log_det(y)
        # the sequential (fixed-point) inverse amplifies round-off through D passes
        torch.testing.assert_close(x_back, x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ladj_inv, ladj, rtol=1e-5, atol=1e-5)
        expected_inv = _jacobian_logdet(lambda v: t.inverse_and_log_det(v)[0], y)
        torch.testing.assert_close(-ladj_inv, expected_inv, rtol=1e-5, atol=1e-5)
        # the inverse transform object of torch.distributions
        torch.testing.assert_close(t.inv(y.clone()), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", available_transforms())
@given(dim=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_log_det_matches_autograd(name, dim, seed):
    torch.manual_seed(seed)
    dim = min(dim, MAX_DIM.get(name, dim))
    _check_against_autograd(_make(name, dim), dim)


@pytest.mark.parametrize("direction", ["iaf", "maf"])
@given(
    dim=st.integers(1, 40),
    widths=st.lists(st.integers(1, 70), min_size=1, max_size=3),
    order=st.sampled_from(["natural", "reversed", "random"]),
    skip=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_autoregressive_any_widths_and_orders(direction, dim, widths, order, skip, seed):
    torch.manual_seed(seed)
    t = AffineAutoregressive(
        dim, tuple(widths), direction=direction, order=order, skip_connections=skip
    ).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.1 * torch.randn_like(p))
    _check_against_autograd(t, dim)


@pytest.mark.parametrize("name", available_transforms())
def test_identity_at_initialisation_exactly(name):
    t = make_transform(name, 6, **HIDDEN.get(name, {}))
    if name == "permute":
        pytest.skip("a permutation is a fixed reordering, not a learnable layer that starts at identity")
    x = torch.randn(4, 6) * 100
    y, ladj = t.forward_and_log_det(x)
    assert torch.equal(y, x)
    assert torch.equal(ladj, torch.zeros(4))


@pytest.mark.parametrize("name", available_transforms())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_shapes_and_dtypes(name, dtype):
    t = _make(name, 5, dtype=dtype)
    x = torch.randn(3, 2, 5, dtype=dtype)
    y, ladj = t.forward_and_log_det(x)
    assert y.shape == (3, 2, 5) and y.dtype == dtype
    assert ladj.shape == (3, 2)
    # each batch element equals the unbatched call
    y0, l0 = t.forward_and_log_det(x[1, 0])
    torch.testing.assert_close(y[1, 0], y0)
    torch.testing.assert_close(ladj[1, 0], l0)
    if t.has_inverse:
        x_back, _ = t.inverse_and_log_det(y)
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        torch.testing.assert_close(x_back, x, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", available_transforms())
def test_large_inputs_stay_finite(name):
    t = _make(name, 8, dtype=torch.float32, perturb=1.0)
    x = torch.tensor([1e4, -1e4, 3e3, -5e3, 1e4, 0.0, -1e4, 2e3], dtype=torch.float32)
    x = torch.stack([x, -x, x.flip(0)])
    y, ladj = t.forward_and_log_det(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    if t.has_inverse:
        x_back, ladj_inv = t.inverse_and_log_det(x)
        assert torch.isfinite(x_back).all() and torch.isfinite(ladj_inv).all()
    # gradients stay finite too
    if not list(t.parameters()):
        return
    loss = ladj.sum() + y.tanh().sum()
    loss.backward()
    for p in t.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", available_transforms())
def test_cached_log_det_belongs_to_its_pair(name):
    # call twice, then ask for the first pair's log-det: it must not be the second pair's
    t = _make(name, 4)
    x1, x2 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    y1 = t(x1)
    y2 = t(x2)
    torch.testing.assert_close(t.log_abs_det_jacobian(x1, y1), t.forward_and_log_det(x1)[1])
    torch.testing.assert_close(t.log_abs_det_jacobian(x2, y2), t.forward_and_log_det(x2)[1])
    if not t.constant_log_det:  # e.g. volume preserving: every pair has log-det 0
        assert not torch.allclose(t.forward_and_log_det(x1)[1], t.forward_and_log_det(x2)[1])


def test_planar_without_inverse_says_what_to_use():
    t = _make("planar", 3)
    assert t.has_inverse is False
    y = t(torch.randn(3, dtype=torch.float64))
    assert torch.equal(t.inv(y), t.inv(y))  # its own (cached) sample inverts
    with pytest.raises(NotInvertibleError, match="maf"):
        t.inv(torch.randn(3, dtype=torch.float64))


def test_planar_constraint_keeps_it_invertible():
    t = Planar(5).double()
    with torch.no_grad():
        t.w.copy_(torch.randn(5))
        t.u.copy_(-10 * t.w)  # w.u << -1 would break invertibility without the reparametrisation
    assert (t.w @ t.u_hat()).item() > -1
    assert torch.equal(Planar(5).u_hat(), torch.zeros(5))  # u = 0 gives u_hat = 0 exactly


@given(
    dim=st.integers(1, 64),
    widths=st.lists(st.integers(1, 80), min_size=1, max_size=3),
    order=st.sampled_from(["natural", "reversed", "random"]),
    skip=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_made_jacobian_is_zero_where_the_mask_says(dim, widths, order, skip, seed):
    torch.manual_seed(seed)
    made = MADE(
        dim, tuple(widths), num_outputs=2, order=order, zero_output=False, skip_connections=skip
    ).double()
    with torch.no_grad():
        made.output.weight.normal_()
    x = torch.randn(dim, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v), x)  # (2, D, D)
    allowed = made.connectivity()
    assert torch.all(jac[:, ~allowed] == 0)
    if skip:  # outputs then depend on every allowed input, through the direct connections
        assert torch.all(jac[:, allowed] != 0)


def test_made_masks_by_hand():
    made = MADE(3, (2,), num_outputs=1, order="natural")
    # input degrees 1,2,3; hidden degrees spread over 1..2 -> [1, 2]
    assert torch.equal(made.mask0, torch.tensor([[1.0, 0, 0], [1, 1, 0]]))
    # output mask: [hidden part | direct input part]
    assert torch.equal(made.mask_out, torch.tensor([[0.0, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1, 1, 0]]))
    rev = MADE(3, (2,), num_outputs=1, order="reversed")
    assert torch.equal(
        rev.connectivity(), torch.tensor([[False, True, True], [False, False, True], [False, False, False]])
    )


def test_made_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="hidden_dims"):
        MADE(3, ())
    with pytest.raises(ValueError, match="hidden_dims"):
        MADE(3, (0,))
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, (4,), order=[0, 0, 1])
    with pytest.raises(ValueError, match="direction"):
        AffineAutoregressive(3, direction="sideways")
    with pytest.raises(ValueError, match="unknown transform"):
        make_transform("glowy", 3)


def test_maf_sampling_reuses_masked_weights_once_per_call():
    t = AffineAutoregressive(6, (8,), direction="maf")
    calls = []
    original = t.made.masked_weights
    t.made.masked_weights = lambda: calls.append(1) or original()
    t.forward_and_log_det(torch.randn(5, 6))
    assert len(calls) == 1


@pytest.mark.parametrize("dim", [1, 3, 6])
def test_fixed_affine_whitening_map_against_autograd(dim):
    """The unregistered FixedAffine (the Laplace whitening map of flow guides) meets the same standard."""
    from pyro_nf.transforms import FixedAffine

    g = torch.Generator().manual_seed(dim)
    tril = torch.tril(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    tril.diagonal().copy_(torch.rand(dim, generator=g, dtype=torch.float64) + 0.1)
    t = FixedAffine(torch.randn(dim, generator=g, dtype=torch.float64), tril)
    _check_against_autograd(t, dim)
    x = torch.randn(4, 2, dim, dtype=torch.float64)
    y, ladj = t.forward_and_log_det(x)
    assert y.shape == x.shape and ladj.shape == (4, 2)
    torch.testing.assert_close(t.inverse_and_log_det(y)[0], x)
    with pytest.raises(ValueError, match="non-zero diagonal"):
        FixedAffine(torch.zeros(2), torch.zeros(2, 2))
