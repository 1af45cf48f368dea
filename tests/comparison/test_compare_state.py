"""Issue 9 items 7 and 13 (comparison): compare() leaves the param store alone; fit options checked."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_nf import AutoMeanField, compare


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


Y = torch.tensor([0.4, 1.0, 0.7])
FAST = {"fit_kwargs": {"num_steps": 10}, "num_samples": 30, "diagnose_samples": 30, "progress": False}


def test_compare_keeps_unrelated_params_and_a_users_guide():
    mine = pyro.param("my_weight", torch.tensor([1.0, 2.0]))
    guide = AutoMeanField(model)
    guide(Y)  # the user's own (live) guide of a class compare also builds
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    result = compare(model, Y, guides=["meanfield"], **FAST)
    after = dict(pyro.get_param_store().items())
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k].detach()) for k in before)
    assert pyro.param("my_weight") is mine
    fitted = result.fits["meanfield"].guide
    assert fitted._pyro_name != guide._pyro_name
    assert not {id(p) for p in fitted.parameters()} & {id(p) for p in guide.parameters()}


def test_misspelled_fit_option_is_refused_not_passed_to_the_model():
    with pytest.raises(
        ValueError, match=r"unknown fit option\(s\) 'num_step' \(did you mean 'num_steps'\?\)"
    ):
        compare(model, Y, guides=["meanfield"], fit_kwargs={"num_step": 10}, progress=False)
