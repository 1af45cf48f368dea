"""Coupling, ActNorm, LU-linear and spline layers: the checks beyond the registry-wide ones."""

from __future__ import annotations

import pytest
import torch

from pyro_nf.transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    LULinear,
    SplineAutoregressive,
    SplineCoupling,
    available_transforms,
    coupling_mask,
    make_transform,
    rq_spline,
)

NEW = [
    "additive_coupling",
    "affine_coupling",
    "scale",
    "actnorm",
    "lu_linear",
    "spline_coupling",
    "spline_autoregressive",
]


def _perturb(t: torch.nn.Module, scale: float) -> torch.nn.Module:
    with torch.no_grad():
        for p in t.parameters():
            p.add_(scale * torch.randn_like(p))
    return t


def _logdet(fn, x):
    return torch.linalg.slogdet(torch.autograd.functional.jacobian(fn, x, vectorize=True)).logabsdet


def test_new_layers_are_registered():
    assert set(NEW) <= set(available_transforms())


@pytest.mark.parametrize("name", NEW)
def test_one_dimensional_layers(name):
    torch.manual_seed(0)
    t = _perturb(make_transform(name, 1).double(), 0.5)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).unsqueeze(-1)
    y, ladj = t.forward_and_log_det(x)
    assert y.shape == (7, 1) and ladj.shape == (7,)
    assert not torch.equal(y, x)  # a 1-D layer still learns something (unconditionally)
    # each point is its own 1-D problem: d(sum_i y_i)/dx_i = dy_i/dx_i
    dydx = torch.autograd.functional.jacobian(lambda v: t.forward_and_log_det(v)[0].sum(), x)
    torch.testing.assert_close(ladj, dydx.squeeze(-1).abs().log())
    torch.testing.assert_close(t.inverse_and_log_det(y)[0], x)


@pytest.mark.parametrize("name", NEW)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(1)
    t = _perturb(make_transform(name, 6).double(), 0.3)
    y, ladj = t.forward_and_log_det(torch.randn(5, 6, dtype=torch.float64))
    (y.sin().sum() + ladj.sum()).backward()
    for pname, p in t.named_parameters():
        if name == "lu_linear" and pname in ("lower", "upper"):  # only the strict triangles are used
            mask = torch.ones(6, 6, dtype=torch.bool).tril(-1)
            grad = p.grad[mask if pname == "lower" else mask.T]
            assert (grad != 0).all(), pname
        assert p.grad is not None and (p.grad != 0).any(), pname


@pytest.mark.parametrize("cls", [AdditiveCoupling, AffineCoupling, SplineCoupling])
@pytest.mark.parametrize("mask, parity", [("alternate", 0), ("alternate", 1), ("half", 0), ("half", 1)])
def test_coupling_leaves_the_conditioning_half_alone(cls, mask, parity):
    torch.manual_seed(2)
    t = _perturb(cls(5, (8,), mask=mask, parity=parity).double(), 0.5)
    x = torch.randn(5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: t.forward_and_log_det(v)[0], x)
    transformed = coupling_mask(5, mask, parity)
    cond = ~transformed
    assert torch.equal(jac[cond][:, cond], torch.eye(int(cond.sum()), dtype=torch.float64))
    assert torch.all(jac[cond][:, transformed] == 0)  # conditioning part ignores the rest
    t_block = jac[transformed][:, transformed]
    assert torch.equal(t_block, torch.diag(torch.diagonal(t_block)))  # elementwise on its half
    if cls is not AdditiveCoupling:
        assert torch.all(jac[transformed][:, cond] != 0)  # ... conditioned on the other half


def test_coupling_masks_and_errors():
    assert coupling_mask(4, "alternate").tolist() == [True, False, True, False]
    assert coupling_mask(4, "half", 1).tolist() == [False, False, True, True]
    assert coupling_mask(1, "alternate", 1).tolist() == [True]  # D = 1: unconditional
    assert AffineCoupling(3, (4,), mask=[False, True, True]).transformed_idx.tolist() == [1, 2]
    assert torch.equal(coupling_mask(6, 0, 1), coupling_mask(6, "alternate", 1))
    assert coupling_mask(6, 2, 1).tolist() == [False] * 4 + [True] * 2
    with pytest.raises(ValueError, match="bit 2 splits nothing"):
        coupling_mask(4, 2)
    with pytest.raises(ValueError, match="parity"):
        coupling_mask(4, "half", 2)
    with pytest.raises(ValueError, match="mask"):
        coupling_mask(4, "checkerboard")
    with pytest.raises(ValueError, match="no coordinate"):
        coupling_mask(2, [False, False])
    with pytest.raises(ValueError, match="boolean vector of length 3"):
        coupling_mask(3, [True, False])
    with pytest.raises(ValueError, match="max_log_scale"):
        AffineCoupling(3, max_log_scale=0.0)
    with pytest.raises(ValueError, match="hidden_dims"):
        AdditiveCoupling(3, hidden_dims=())


@pytest.mark.parametrize("dim", [2, 3, 10, 17])
def test_bit_masks_separate_every_pair_of_coordinates(dim):
    bits = max(1, (dim - 1).bit_length())
    separated = torch.zeros(dim, dim, dtype=torch.bool)  # [i, j]: i transformed given j
    for b in range(bits):
        for parity in (0, 1):
            m = coupling_mask(dim, b, parity)
            separated |= m[:, None] & ~m[None, :]
    assert torch.equal(separated, ~torch.eye(dim, dtype=torch.bool))


def test_affine_coupling_scale_is_bounded():
    t = AffineCoupling(2, (4,), max_log_scale=2.0, mask=[False, True])
    with torch.no_grad():
        t.net.output.bias.fill_(1e6)  # an absurd network output
    _, ladj = t.forward_and_log_det(torch.zeros(3, 2))
    assert torch.allclose(ladj, torch.full((3,), 2.0))


def test_actnorm_data_init_standardises_the_batch():
    torch.manual_seed(3)
    data = torch.randn(400, 3, dtype=torch.float64) * torch.tensor([5.0, 0.1, 2.0]) + torch.tensor(
        [-3.0, 8.0, 0.0]
    )
    t = ActNorm(3).double().data_init(data)
    y, ladj = t.forward_and_log_det(data)
    torch.testing.assert_close(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(ladj, -data.std(0).log().sum().expand(400))
    torch.testing.assert_close(t.inverse_and_log_det(y)[0], data)
    with pytest.raises(ValueError, match="constant"):
        ActNorm(2).data_init(torch.tensor([[1.0, 2.0], [1.0, 3.0]]))
    with pytest.raises(ValueError, match=r"\(N >= 2, 2\)"):
        ActNorm(2).data_init(torch.zeros(1, 2))


@pytest.mark.parametrize("permutation", ["natural", "reversed", "random"])
def test_lu_linear_is_the_matrix_p_l_u(permutation):
    torch.manual_seed(4)
    t = _perturb(LULinear(5, permutation=permutation).double(), 0.7)
    with torch.no_grad():
        t.diag_sign[1] = -1.0  # a negative diagonal entry is allowed
    w = t.weight()
    lower, upper = t.factors()
    assert torch.equal(torch.diagonal(lower), torch.ones(5, dtype=torch.float64))
    assert torch.equal(lower.triu(1), torch.zeros(5, 5, dtype=torch.float64))
    assert torch.equal(upper.tril(-1), torch.zeros(5, 5, dtype=torch.float64))
    x = torch.randn(4, 5, dtype=torch.float64)
    y, ladj = t.forward_and_log_det(x)
    torch.testing.assert_close(y, x @ w.T)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(w).logabsdet.expand(4))
    torch.testing.assert_close(t.inverse_and_log_det(y)[0], torch.linalg.solve(w, y.T).T)


def test_lu_linear_param_scale_multiplies_every_parameter_where_it_enters_w():
    torch.manual_seed(5)
    plain = _perturb(LULinear(4, permutation="reversed").double(), 0.7)
    scaled = LULinear(4, permutation="reversed", param_scale=0.25).double()
    with torch.no_grad():
        for p, q in zip(scaled.parameters(), plain.parameters(), strict=True):
            p.copy_(4.0 * q)  # c * (4 theta) == theta: the same matrix
    torch.testing.assert_close(scaled.weight(), plain.weight())
    x = torch.randn(3, 4, dtype=torch.float64)
    y, ladj = scaled.forward_and_log_det(x)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(scaled.weight()).logabsdet.expand(3))
    torch.testing.assert_close(ladj, plain.forward_and_log_det(x)[1])
    torch.testing.assert_close(scaled.inverse_and_log_det(y)[0], x)
    assert torch.equal(LULinear(4, param_scale=0.1).double()(x), x)  # the identity at initialisation
    for bad in (0.0, -1.0, float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="param_scale"):
            LULinear(4, param_scale=bad)


def test_spline_is_exactly_the_identity_at_zero_output_both_ways():
    for dtype in (torch.float32, torch.float64):
        v = torch.cat([torch.linspace(-7, 7, 1001, dtype=dtype), torch.tensor([-1e4, 1e4], dtype=dtype)])
        params = torch.zeros(v.shape[0], 3 * 5 - 1, dtype=dtype)
        for inverse in (False, True):
            out, logd = rq_spline(v, params, bound=3.0, inverse=inverse)
            assert torch.equal(out, v) and torch.equal(logd, torch.zeros_like(v))


def _strong_spline(seed, dtype=torch.float64, bins=6, bound=2.0):
    torch.manual_seed(seed)
    v = torch.cat(
        [torch.linspace(-bound - 1, bound + 1, 301, dtype=dtype), torch.tensor([-bound, bound], dtype=dtype)]
    )
    params = 2.0 * torch.randn(v.shape[0], 3 * bins - 1, dtype=dtype).mean(0, keepdim=True).expand(
        v.shape[0], -1
    )
    return v, params


def test_spline_is_monotone_continuous_with_identity_tails():
    v, params = _strong_spline(5)
    y, logd = rq_spline(v, params, bound=2.0)
    order = torch.argsort(v)
    dv, dy = v[order].diff(), y[order].diff()
    assert torch.equal(dy > 0, dv > 0) and torch.equal(dy == 0, dv == 0)  # strictly increasing
    outside = v.abs() > 2.0
    assert torch.equal(y[outside], v[outside]) and torch.equal(logd[outside], torch.zeros_like(v[outside]))
    eps = 1e-9  # continuous (value and derivative) at the ends of the interval
    for b in (-2.0, 2.0):
        pts = torch.tensor([b - eps, b + eps], dtype=torch.float64)
        yy, ld = rq_spline(pts, params[:2], bound=2.0)
        assert abs(yy[1] - yy[0]) < 1e-8 and abs(ld[1] - ld[0]) < 1e-6
    assert not torch.allclose(y[~outside], v[~outside], atol=1e-2)  # and it is not the identity


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_spline_inverse_and_derivative(dtype, tol):
    v, params = _strong_spline(6, dtype)
    y, logd = rq_spline(v, params, bound=2.0)
    x_back, logd_back = rq_spline(y, params, bound=2.0, inverse=True)
    torch.testing.assert_close(x_back, v, atol=tol, rtol=tol)
    torch.testing.assert_close(logd_back, logd, atol=10 * tol, rtol=10 * tol)
    if dtype == torch.float64:
        deriv = torch.autograd.functional.jacobian(lambda u: rq_spline(u, params, bound=2.0)[0].sum(), v)
        torch.testing.assert_close(logd, deriv.log())


@pytest.mark.parametrize("cls", [SplineCoupling, SplineAutoregressive])
def test_spline_layers_against_autograd_when_strongly_nonlinear(cls):
    torch.manual_seed(7)
    t = _perturb(cls(4, (8,), num_bins=5, bound=1.5).double(), 1.0)
    for x in torch.randn(3, 4, dtype=torch.float64) * 1.5:  # some coordinates in the tails
        y, ladj = t.forward_and_log_det(x)
        torch.testing.assert_close(ladj, _logdet(lambda v: t.forward_and_log_det(v)[0], x))
        x_back, ladj_back = t.inverse_and_log_det(y)
        torch.testing.assert_close(x_back, x)
        torch.testing.assert_close(ladj_back, ladj)


def test_spline_autoregressive_directions_and_errors():
    torch.manual_seed(8)
    iaf = _perturb(SplineAutoregressive(3, (6,), direction="iaf").double(), 0.5)
    maf = SplineAutoregressive(3, (6,), direction="maf").double()
    maf.load_state_dict(iaf.state_dict())
    x = torch.randn(4, 3, dtype=torch.float64)
    # the same weights in the two directions: IAF's inverse (D sequential passes) and MAF's
    # forward (D passes) are the same fixed-point solve, MAF's inverse and IAF's forward one pass
    y_iaf, ladj_iaf = iaf.forward_and_log_det(x)
    x_maf, ladj_maf = maf.inverse_and_log_det(y_iaf)
    torch.testing.assert_close(maf.forward_and_log_det(x_maf)[0], y_iaf)
    torch.testing.assert_close(iaf.inverse_and_log_det(y_iaf)[0], x)
    assert not torch.allclose(x_maf, x)  # theta(y) != theta(x): two different maps
    with pytest.raises(ValueError, match="direction"):
        SplineAutoregressive(3, direction="up")
    with pytest.raises(ValueError, match="num_bins"):
        SplineCoupling(3, num_bins=0)
    with pytest.raises(ValueError, match="min_bin"):
        SplineCoupling(3, num_bins=10, min_bin=0.2)
