"""The coupling-flow guides (nice, realnvp, glow, nsf): exact log q of external points in one pass."""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_nf import AutoGlow, AutoNICE, AutoNSF, AutoRealNVP, make_guide
from pyro_nf.examples import get_example
from pyro_nf.examples._banana import banana_sampler

COUPLING = ["nice", "realnvp", "glow", "nsf"]


@contextlib.contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _count_inverse_calls(guide) -> list[int]:
    counts = [0] * len(guide.flows)
    for i, layer in enumerate(guide.flows):
        original = layer._inverse_and_ladj

        def counted(y, _i=i, _orig=original):
            counts[_i] += 1
            return _orig(y)

        layer._inverse_and_ladj = counted
    return counts


@pytest.mark.parametrize("name", COUPLING)
def test_log_q_of_external_banana_points_is_the_change_of_variables(name):
    with _default_dtype(torch.float64):
        ex = get_example("banana")
        guide = make_guide(name, ex.model, num_flows=4, hidden_dims=(16,))
        guide()
        torch.manual_seed(0)
        with torch.no_grad():  # a random, far-from-identity flow
            for p in guide.flows.parameters():
                p.add_(0.1 * torch.randn_like(p))
            guide.loc.copy_(torch.tensor([1.0, -2.0]))
        guide.scale = torch.tensor([8.0, 4.0])  # a base that covers the banana's points
        draws = banana_sampler(1000, seed=1)  # exact posterior draws: points the guide did not draw
        z = torch.stack([draws["x0"], draws["x1"]], dim=-1)  # both sites are unconstrained reals

        counts = _count_inverse_calls(guide)
        log_q = guide.log_prob_unconstrained(z.clone())
        assert counts == [1] * len(guide.flows)  # one pass: each layer inverted once for all 1000
        assert log_q.shape == (1000,) and torch.isfinite(log_q).all()

        # change of variables by autograd: eps = T^{-1}(z), log q = log N(eps) + log|det d eps/dz|
        zz = z.clone().requires_grad_(True)
        eps = guide.get_transform().inv(zz)
        # the points are independent, so row i of every Jacobian is the gradient of sum_n eps[n, i]
        rows = [torch.autograd.grad(eps[:, i].sum(), zz, retain_graph=True)[0] for i in range(2)]
        jac = torch.stack(rows, dim=-2)  # (1000, 2, 2)
        expected = guide.get_base_dist().log_prob(eps) + torch.linalg.slogdet(jac).logabsdet
        # float64; measured worst absolute differences 9e-16 (nice), 3e-14 (realnvp), 5e-13 (glow),
        # 4e-15 (nsf); median log q about -6
        torch.testing.assert_close(log_q, expected.detach(), rtol=1e-10, atol=1e-10)
        assert log_q.std() > 0.5  # a non-trivial density over these points


@pytest.mark.parametrize("cls", [AutoNICE, AutoRealNVP, AutoGlow, AutoNSF])
def test_one_dimensional_latent(cls):
    def model():
        pyro.sample("x", dist.Normal(1.0, 2.0))

    guide = cls(model, hidden_dims=(8,))
    assert guide()["x"].shape == ()
    assert guide.get_posterior().rsample((5,)).shape == (5, 1)
    assert guide.log_prob_unconstrained(torch.zeros(5, 1)).shape == (5,)


def test_default_sizes_and_bad_options():
    ex = get_example("funnel")  # D = 10: RealNVP 4 couplings (NICE 8), width 32
    guide = AutoRealNVP(ex.model)
    guide()
    assert guide.num_flows == 4
    assert [type(m).__name__ for m in guide.flows] == ["ActNorm", "AffineCoupling"] * 4
    assert len(AutoRealNVP(ex.model, actnorm=False)._make_flows(10)) == 4
    nice = AutoNICE(ex.model)
    nice()
    assert nice.num_flows == 8
    assert guide.flows[1].net.hidden_dims == (32, 32)
    glow = AutoGlow(ex.model, num_flows=2)
    glow()
    assert [type(m).__name__ for m in glow.flows] == ["ActNorm", "LULinear", "AffineCoupling"] * 2
    assert [m.param_scale for m in glow.flows[1::3]] == [0.1, 0.1]  # Glow's LU moves at a tenth the pace
    assert AutoGlow(ex.model, lu_param_scale=1.0)._make_flows(10)[1].param_scale == 1.0
    with pytest.raises(ValueError, match="lu_param_scale"):
        AutoGlow(ex.model, lu_param_scale=0.0)
    with pytest.raises(ValueError, match="num_flows"):
        AutoNICE(ex.model, num_flows=0)
    with pytest.raises(ValueError, match="hidden_dims"):
        AutoGlow(ex.model, hidden_dims=(8, 0))
    with pytest.raises(ValueError, match="num_bins"):
        AutoNSF(ex.model, num_bins=0)
    with pytest.raises(ValueError, match="max_log_scale"):
        AutoRealNVP(ex.model, max_log_scale=-1.0)
    for cls in (AutoNICE, AutoRealNVP, AutoGlow, AutoNSF):  # a misspelt option is an error, not ignored
        with pytest.raises(TypeError, match="'input_scal'"):
            cls(ex.model, input_scal="prior")
    with pytest.raises(TypeError, match="'actnorm'"):  # RealNVP's own option is not Glow's
        AutoGlow(ex.model, actnorm=False)


def test_nsf_drops_the_spline_skip_block_only_where_it_would_not_fit():
    from pyro_nf.guides.spline_flow import MAX_SPLINE_SKIP_WEIGHTS, spline_skip_weights

    def spline_skips(guide: AutoNSF, dim: int) -> list[bool]:
        flows = guide._make_flows(dim)
        return [m.net.skip_connections for m in flows if type(m).__name__ == "SplineCoupling"]

    ex = get_example("funnel")
    big = next(d for d in range(1000, 4000, 100) if spline_skip_weights(d, 8) > MAX_SPLINE_SKIP_WEIGHTS)
    opts = {"num_flows": 1, "hidden_dims": (4,), "spline_skip": True}
    assert spline_skips(AutoNSF(ex.model, **opts), 10) == [True]
    assert spline_skips(AutoNSF(ex.model, **opts), big) == [False]
    assert spline_skips(AutoNSF(ex.model, **opts, num_bins=2), big) == [True]
    assert spline_skips(AutoNSF(ex.model, num_flows=1, hidden_dims=(4,)), 10) == [False]  # the default


def test_conditioner_input_scale_and_activation_reach_the_layers():
    ex = get_example("funnel")
    torch.manual_seed(0)
    plain = AutoRealNVP(ex.model, input_scale=1.0)
    plain()
    torch.manual_seed(0)
    scaled = AutoRealNVP(ex.model, input_scale=10.0)
    scaled()
    for a, b in zip(plain.flows[1::2], scaled.flows[1::2], strict=True):  # the couplings
        torch.testing.assert_close(b.net.layers[0].weight * 10.0, a.net.layers[0].weight)  # same draw
        torch.testing.assert_close(b.net.layers[1].weight, a.net.layers[1].weight)
    z = torch.randn(5, 10)
    torch.testing.assert_close(scaled.log_prob_unconstrained(z), plain.log_prob_unconstrained(z))  # identity
    elu = AutoGlow(ex.model, num_flows=1, activation="elu")
    elu()
    assert isinstance(elu.flows[2].net.activation, torch.nn.ELU)
    with pytest.raises(ValueError, match="activation must be one of"):
        AutoRealNVP(ex.model, activation="sigmoid")
    with pytest.raises(ValueError, match="input_scale"):
        AutoNSF(ex.model, input_scale=0.0)
    with pytest.raises(ValueError, match="input_scale"):
        AutoNSF(ex.model, input_scale="data")


def _banana(b: float = 0.03):
    def model():
        x0 = pyro.sample("x0", dist.Normal(0.0, 10.0))
        pyro.sample("x1", dist.Normal(b * (x0**2 - 100.0), 1.0))

    return model


@pytest.mark.parametrize("name", ["realnvp", "glow", "nsf"])
def test_prior_input_scale_sets_the_conditioners_up_where_the_guide_keeps_its_own_start(name):
    """The banana declines the Laplace start: the conditioners' first layers are divided column-wise by
    the prior's robust scales of their inputs (x0: 10, x1: 2.7); the guide stays the identity."""
    model = _banana()
    guides = []
    for scale in (1.0, "prior"):
        pyro.clear_param_store()
        torch.manual_seed(0)
        guide = make_guide(name, model, input_scale=scale)
        guide()
        assert guide.init_to_laplace().startswith("own start")
        guides.append(guide)
    plain, scaled = guides
    assert not hasattr(plain, "conditioner_scales")
    s = scaled.conditioner_scales
    assert abs(float(s[0]) / 10.0 - 1) < 0.15 and abs(float(s[1]) / 2.72 - 1) < 0.15, s
    nets = [
        (a.net, b.net, b.conditioning_idx)
        for a, b in zip(plain.flows, scaled.flows, strict=True)
        if hasattr(b, "net")
    ]
    assert nets
    for a, b, idx in nets:
        torch.testing.assert_close(b.layers[0].weight * s[idx].float(), a.layers[0].weight)
    z = torch.randn(7, 2)
    torch.testing.assert_close(scaled.log_prob_unconstrained(z), plain.log_prob_unconstrained(z))


def test_prior_input_scale_leaves_a_whitened_guide_alone():
    """Where the Laplace start is kept the layers see whitened coordinates: nothing is rescaled."""

    def model():
        pyro.sample("x", dist.Normal(torch.tensor([1.0, -2.0]), torch.tensor([10.0, 0.1])).to_event(1))

    torch.manual_seed(0)
    guide = AutoRealNVP(model)
    guide()
    couplings = [layer for layer in guide.flows if hasattr(layer, "net")]
    w = [layer.net.layers[0].weight.clone() for layer in couplings]
    assert guide.init_to_laplace().startswith("laplace")
    assert not hasattr(guide, "conditioner_scales")
    for layer, before in zip(couplings, w, strict=True):
        assert torch.equal(layer.net.layers[0].weight, before)


def test_nsf_mixing_and_spline_options_reach_the_layers():
    ex = get_example("funnel")
    guide = AutoNSF(ex.model)  # defaults: RealNVP's 4 blocks, one spline coupling after the first
    guide()
    names = [type(m).__name__ for m in guide.flows]
    assert names == ["ActNorm", "AffineCoupling", "SplineCoupling"] + ["ActNorm", "AffineCoupling"] * 3
    (spline,) = [m for m in guide.flows if type(m).__name__ == "SplineCoupling"]
    assert spline.transformed_idx.tolist() == [0, 2, 4, 6, 8]
    assert (spline.min_bin, spline.max_log_derivative, spline.param_scale) == (0.02, 3.0, 0.1)
    assert not spline.net.skip_connections and guide.flows[1].net.skip_connections
    guide = AutoNSF(
        ex.model,
        spline_layers=None,
        min_bin=0.01,
        max_log_derivative=2.0,
        spline_param_scale=0.5,
        spline_skip=True,
    )
    guide()
    assert "LULinear" not in [type(m).__name__ for m in guide.flows]
    splines = [m for m in guide.flows if type(m).__name__ == "SplineCoupling"]
    assert [s.transformed_idx.tolist() for s in splines[:3]] == [
        [0, 2, 4, 6, 8],
        [1, 3, 5, 7, 9],
        [0, 1, 4, 5, 8, 9],
    ]
    assert len(splines) == 4 and all(s.net.skip_connections for s in splines)
    assert all((s.min_bin, s.max_log_derivative, s.param_scale) == (0.01, 2.0, 0.5) for s in splines)
    pyro.clear_param_store()
    guide = AutoNSF(ex.model, mixing="lu", affine=False, spline_layers=None)  # the paper's all-spline NSF
    guide()
    assert [type(m).__name__ for m in guide.flows][:6] == [
        "ActNorm",
        "SplineCoupling",
        "ActNorm",
        "LULinear",
        "SplineCoupling",
        "ActNorm",
    ]
    with pytest.raises(ValueError, match="mixing must be 'lu' or 'masks'"):
        AutoNSF(ex.model, mixing="random")
    with pytest.raises(ValueError, match="spline_layers"):
        AutoNSF(ex.model, spline_layers=0)
    with pytest.raises(ValueError, match="spline_param_scale"):
        AutoNSF(ex.model, spline_param_scale=0.0)
