"""Issue 9, item 2: flow guides stay bounded in their first steps at the learning rates Pyro users use.

Before the MADE output gain (``pyro_nf.transforms.made.MADE(output_gain=...)``), Adam's first steps moved
every output of a zero-initialised output layer by up to ``fan_in`` learning rates, so at ``lr = 0.1``
AutoIAF / AutoMAF ended Pyro's Binomial model (``tests/infer/test_predictive.py``) with phi at 0 or 1 in
4 of 4 seeds, and Pyro's quantiles model (``lr = 0.05``, 100 particles) went non-finite at step 3 in 6
of 20 seeds.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_nf import AutoIAF, AutoMAF, fit


def _binomial(num_trials):
    with pyro.plate("data", num_trials.size(0)):
        phi = pyro.sample("phi", dist.Uniform(num_trials.new_tensor(0.0), num_trials.new_tensor(1.0)))
        return pyro.sample("obs", dist.Binomial(num_trials, phi))


def _binomial_problem(seed):
    pyro.set_rng_seed(seed)
    num_trials = torch.full((5,), 1000.0)
    num_success = dist.Binomial(num_trials, torch.full((5,), 0.7)).sample()
    return poutine.condition(_binomial, data={"obs": num_success}), num_trials, num_success


def _check_phi(guide, num_trials, num_success):
    phi = guide.median(num_trials)["phi"]
    exact = (num_success + 1) / (num_trials + 2)  # Beta(1 + s, 1 + n - s) posterior mode ~ mean
    sd = (exact * (1 - exact) / num_trials).sqrt()  # ~0.0145
    assert torch.all((phi - exact).abs() < 5 * sd), (phi, exact)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("guide_cls", [AutoIAF, AutoMAF])
def test_binomial_at_lr_0_1_through_plain_svi(guide_cls, seed):
    model, num_trials, num_success = _binomial_problem(seed)
    guide = guide_cls(model)
    svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(1000):
        svi.step(num_trials)
    _check_phi(guide, num_trials, num_success)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_binomial_at_lr_0_1_through_fit(seed):
    model, num_trials, num_success = _binomial_problem(seed)
    guide = AutoIAF(model)
    result = fit(model, guide, num_trials, num_steps=1000, lr=0.1, seed=seed, progress=False)
    assert result.num_recoveries == 0
    _check_phi(guide, num_trials, num_success)


def _quantiles_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.LogNormal(0.0, 1.0))
    pyro.sample("z", dist.Beta(2.0, 2.0).expand([2]).to_event(1))


def test_quantiles_model_has_no_nonfinite_start():
    bad = []
    for seed in range(20):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = AutoIAF(_quantiles_model)
        elbo = Trace_ELBO(num_particles=100, vectorize_particles=True)
        svi = SVI(_quantiles_model, guide, Adam({"lr": 0.05, "betas": (0.8, 0.99)}), elbo)
        try:
            losses = [svi.step() for _ in range(15)]
        except ValueError:  # a distribution rejected a non-finite parameter
            losses = [math.nan]
        if not all(math.isfinite(v) for v in losses):
            bad.append(seed)
    assert bad == []
