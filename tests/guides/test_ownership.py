"""Issue 9 items 1 and 6: every guide owns its parameters; state dicts load only into their own kind."""

from __future__ import annotations

import gc

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_nf import AutoDiagonal, AutoIAF, AutoMAF, AutoMeanField


def _model(dim):
    def model():
        pyro.sample("x", dist.Normal(torch.arange(float(dim)), 1.0).to_event(1))

    return model


def _train(model, guide, steps=10):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(steps):
        svi.step()


def _values(guide):
    return {k: v.detach().clone() for k, v in guide.state_dict().items()}


@pytest.mark.parametrize("cls", [AutoIAF, AutoDiagonal, AutoMeanField])
def test_second_guide_does_not_share_or_change_the_first(cls):
    model = _model(3)
    first = cls(model, **({"num_flows": 1, "hidden_dims": (8,)} if cls is AutoIAF else {}))
    _train(model, first)
    before = _values(first)
    second = cls(model, **({"num_flows": 1, "hidden_dims": (8,)} if cls is AutoIAF else {}))
    _train(model, second, steps=5)
    mine = {id(p) for p in first.parameters()}
    assert not mine & {id(p) for p in second.parameters()}
    after = _values(first)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_second_guide_on_a_model_of_another_size():
    first = AutoIAF(_model(3), num_flows=1, hidden_dims=(8,))
    _train(_model(3), first, steps=2)
    second = AutoIAF(_model(5), num_flows=1, hidden_dims=(8,))
    assert second()["x"].shape == (5,)


def test_param_store_save_load_route_restores_a_trained_flow(tmp_path):
    model = _model(3)
    guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
    _train(model, guide, steps=10)
    pyro.set_rng_seed(3)
    trained = guide()["x"]
    pyro.get_param_store().save(tmp_path / "params.pt")
    del guide
    gc.collect()
    pyro.clear_param_store()
    pyro.get_param_store().load(tmp_path / "params.pt")
    restored = AutoIAF(model, num_flows=2, hidden_dims=(8,))
    with pytest.warns(UserWarning, match="already in Pyro's param store"):
        restored()  # set-up (a fresh guide's weight initialisation draws random numbers)
    pyro.set_rng_seed(3)
    draw = restored()["x"]
    assert torch.allclose(draw, trained)


def test_store_entries_that_do_not_fit_raise_naming_them():
    guide = AutoIAF(_model(3), num_flows=1, hidden_dims=(8,))
    guide()
    del guide
    gc.collect()
    other = AutoIAF(_model(5), num_flows=1, hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"'AutoIAF.loc' \(3,\).*clear_param_store"):
        other()


def test_iaf_state_dict_does_not_load_into_maf():
    model = _model(3)
    iaf = AutoIAF(model, num_flows=1, hidden_dims=(8,))
    iaf()
    for called in (False, True):
        maf = AutoMAF(model, num_flows=1, hidden_dims=(8,))
        if called:
            maf()
        with pytest.raises(ValueError, match="comes from guide class AutoIAF"):
            maf.load_state_dict(iaf.state_dict())


def test_state_dict_of_another_structure_is_refused():
    model = _model(3)
    a = AutoIAF(model, num_flows=1, hidden_dims=(8,), max_log_scale=5.0)
    a()
    b = AutoIAF(model, num_flows=1, hidden_dims=(8,), max_log_scale=2.0)
    with pytest.raises(ValueError, match="max_log_scale"):
        b.load_state_dict(a.state_dict())


def test_state_dict_of_a_smaller_model_is_refused():
    small = AutoIAF(_model(20), num_flows=1, hidden_dims=(8,))
    small()
    big = AutoIAF(_model(26), num_flows=1, hidden_dims=(8,))
    big.load_state_dict(small.state_dict())
    with pytest.raises(ValueError, match="20 unconstrained latent dimensions but this model has 26"):
        big()
