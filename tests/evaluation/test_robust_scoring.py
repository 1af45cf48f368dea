"""Issue 9 items 4, 9, 10, 13: too few draws, models that do not vectorise, extreme draws, bad options."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyro_nf import diagnose, importance_resample, to_inference_data
from pyro_nf.evaluation.diagnostics import importance_log_weights

X = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -1.0, 0.5]) + 0.3 * torch.randn(30, generator=torch.Generator().manual_seed(1))


def matmul_model(X, y):  # X @ beta does not broadcast over a leading draw dimension
    beta = pyro.sample("beta", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(X @ beta, 0.3), obs=y)


def beta_guide(X, y):
    pyro.sample("beta", dist.Normal(torch.tensor([1.0, -1.0, 0.5]), 0.1).to_event(1))


def _log_joint(model, values, *args):
    tr = poutine.trace(poutine.condition(model, values)).get_trace(*args)
    return float(tr.log_prob_sum())


def test_model_that_does_not_vectorise_falls_back_to_one_draw_at_a_time():
    with pytest.warns(UserWarning, match="does not vectorise.*Vindex"):
        idata = to_inference_data(matmul_model, beta_guide, X, Y, num_samples=8)
    beta = torch.as_tensor(idata.posterior["beta"].values[0])
    log_p = idata.sample_stats["log_p"].values[0]
    expected = [_log_joint(matmul_model, {"beta": b}, X, Y) for b in beta]
    np.testing.assert_allclose(log_p, expected, rtol=1e-4)
    assert dict(idata.log_likelihood.sizes) == {"chain": 1, "draw": 8, "data": 30}
    with pytest.warns(UserWarning, match="does not vectorise"):
        d = diagnose(matmul_model, beta_guide, X, Y, num_samples=50)
    assert np.isfinite(d.khat) and np.isfinite(d.elbo)


def mean_model(y):  # vectorises without an error but wrongly: mu.mean() mixes the draws
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(mu.mean(), 1.0), obs=y)


def test_model_that_vectorises_silently_wrong_is_caught():
    y = torch.tensor([0.5, 1.5, 1.0])

    def guide(y):
        pyro.sample("mu", dist.Normal(0.8, 0.5))

    with pytest.warns(UserWarning, match="does not vectorise.*vectorised but"):
        log_p, log_q = importance_log_weights(mean_model, guide, y, num_samples=40)
    with pytest.warns(UserWarning, match="does not vectorise"):
        idata = to_inference_data(mean_model, guide, y, num_samples=10)
    mu = idata.posterior["mu"].values[0]
    expected = [_log_joint(mean_model, {"mu": torch.tensor(m)}, y) for m in mu]
    np.testing.assert_allclose(idata.sample_stats["log_p"].values[0], expected, rtol=1e-4)


def funnel(dim=3):
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    with pyro.plate("dims", dim):
        pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)))


def extreme_guide(dim=3):  # about a quarter of the draws have exp(v / 2) == 0 in float32 / float64
    pyro.sample("v", dist.Normal(-1000.0, 1500.0))
    with pyro.plate("dims", dim):
        pyro.sample("x", dist.Normal(0.0, 1.0))


def test_extreme_draws_are_reported_not_raised():
    d = diagnose(funnel, extreme_guide, num_samples=400)
    assert 0 < d.num_impossible < 400
    assert "could not be scored" in repr(d) or "-inf" in repr(d)
    assert d.elbo == -math.inf
    idata = to_inference_data(funnel, extreme_guide, num_samples=100)
    assert idata.posterior["v"].shape == (1, 100)
    with pytest.warns(UserWarning):
        importance_resample(idata, on_bad_khat="warn")


Y1 = torch.tensor(0.3)


def simple(y=Y1):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


def simple_guide(y=Y1):
    pyro.sample("mu", dist.Normal(0.15, 0.7))


@pytest.mark.parametrize("num_samples", [1, 2, 20])
def test_too_few_draws_give_an_unknown_verdict(num_samples):
    d = diagnose(simple, simple_guide, num_samples=num_samples)
    assert math.isnan(d.khat)
    assert d.verdict.startswith("unknown")
    assert "at least 21 draws" in repr(d)


def test_enough_draws_give_a_verdict():
    d = diagnose(simple, simple_guide, num_samples=200)
    assert d.verdict.startswith("good")


@pytest.mark.parametrize("bad", [0, -2, 2.5, "10"])
def test_num_samples_is_validated(bad):
    with pytest.raises(ValueError, match="num_samples must be an integer"):
        diagnose(simple, simple_guide, num_samples=bad)
    with pytest.raises(ValueError, match="num_samples must be an integer"):
        to_inference_data(simple, simple_guide, num_samples=bad)


def test_bridge_arguments_are_validated():
    with pytest.raises(TypeError, match="fit must be None or the result of pyro_nf.fit"):
        to_inference_data(simple, simple_guide, num_samples=5, fit="junk")
    with pytest.raises(TypeError, match="needs an InferenceData"):
        importance_resample(None)
    idata = to_inference_data(simple, simple_guide, num_samples=30)
    with pytest.raises(ValueError, match="num_draws must be an integer"):
        importance_resample(idata, num_draws=2.5)


def test_an_unreliable_flow_is_not_told_to_try_a_flow():
    from pyro_nf.evaluation.diagnostics import Diagnosis

    lw = np.random.default_rng(0).normal(size=2000) * 3.0  # log-normal weights: k-hat 0.88
    flow = Diagnosis.from_log_densities(lw, np.zeros(2000), guide="iaf")
    base = Diagnosis.from_log_densities(lw, np.zeros(2000), guide="meanfield")
    assert flow.khat > 0.7
    assert "e.g. a flow" in base.verdict and "e.g. a flow" not in flow.verdict
    assert "richer flow" in flow.verdict
