"""Issue 9 items 11 and 12: baselines' median/quantiles after load_state_dict; flows in traced modules."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_nf import make_guide
from pyro_nf.transforms import AffineAutoregressive, Permute, Planar

Y = torch.tensor([1.0, 2.0, 1.5])


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("d", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.mark.parametrize("name", ["meanfield", "diagonal", "fullrank", "lowrank"])
def test_median_and_quantiles_after_loading_into_a_never_called_baseline(name):
    trained = make_guide(name, model)
    trained(Y)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1)
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    fresh = make_guide(name, model)
    fresh.load_state_dict(state)
    median = fresh.median(Y)
    expected = trained.median(Y)
    assert set(median) == {"mu", "sigma"}
    for k in median:
        assert torch.allclose(median[k], expected[k]), k
    q = fresh.quantiles([0.25, 0.75], Y)
    assert q["mu"].shape == (2,) and bool(q["mu"][0] < q["mu"][1])


@pytest.mark.parametrize("name", ["planar", "iaf", "maf"])
def test_a_module_holding_a_flow_guide_can_be_traced(name):
    guide = make_guide(name, model, num_flows=2)
    guide(Y)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.guide = guide

        def forward(self, y):
            return self.guide(y)["mu"]

    traced = torch.jit.trace_module(Holder(), {"forward": (Y,)}, check_trace=False)
    torch.manual_seed(1)
    draw = traced.forward(Y)
    torch.manual_seed(1)
    assert torch.allclose(draw, guide(Y)["mu"])  # the same draw from the same random stream


@pytest.mark.parametrize(
    "layer",
    [
        lambda: Planar(3),
        lambda: AffineAutoregressive(3, (8,)),
        lambda: Permute(3, [1, 0, 2]),
        lambda: Permute(3, [1, 2, 0]),
    ],
)
def test_sign_is_the_sign_of_the_jacobian_determinant(layer):
    torch.manual_seed(0)
    t = layer().double()
    with torch.no_grad():
        for p in t.parameters():
            p.normal_(0.0, 0.5)
    x = torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(t, x)
    assert int(torch.sign(torch.linalg.det(jac))) == t.sign


@pytest.mark.parametrize("bad", [10, "64", 2.5])
def test_hidden_dims_that_is_not_a_sequence_is_refused(bad):
    with pytest.raises(ValueError, match="hidden_dims must be a sequence of positive integers"):
        make_guide("iaf", model, hidden_dims=bad)
