"""fit()'s recipe (issue 11): time budget, progress-based decay, STL switch-over, the particle
vectorisation fallback and the Laplace start."""

from __future__ import annotations

import math
import time

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_nf import make_guide
from pyro_nf.guides import AutoIAF, AutoPlanar
from pyro_nf.guides.laplace import laplace_start
from pyro_nf.training import STOP_REASONS, Converged, fit
from pyro_nf.training.schedule import STL_MAX_SEQUENTIAL_DIM, Schedule

N, P = 40, 3


def _data():
    g = torch.Generator().manual_seed(0)
    x = 50.0 + 10.0 * torch.randn(N, P, generator=g)  # raw covariates: a strongly correlated posterior
    y = x @ torch.tensor([0.5, -0.2, 0.1]) + 3.0 + 0.5 * torch.randn(N, generator=g)
    return x, y


def regression(x, y):
    """Gaussian linear regression, known noise: the posterior is Gaussian (Laplace is exact)."""
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([P]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(b + (x @ w.unsqueeze(-1)).squeeze(-1), 0.5), obs=y)


def vectorised_regression(x, y):
    """`regression` written to broadcast over a leading particle dimension."""
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([P]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(b + (w * x).sum(-1), 0.5), obs=y)


def exact_posterior(x, y):
    design = torch.cat([torch.ones(N, 1), x], 1).double()
    precision = torch.eye(P + 1, dtype=torch.float64) / 100.0 + design.T @ design / 0.25
    cov = torch.linalg.inv(precision)
    return cov @ design.T @ y.double() / 0.25, cov


def funnel():
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    with pyro.plate("dims", 4):
        pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)))


def test_schedule_progress_is_the_larger_budget_fraction():
    s = Schedule(num_steps=100, time_budget=1e9, stl_after=0.5)
    assert s.progress(30) == pytest.approx(0.3) and not s.wants_stl(30) and s.wants_stl(50)
    assert Schedule(10, 1e-9, None).progress(0) == 1.0 and not Schedule(10, None, None).wants_stl(10)
    for bad in ({"time_budget": 0.0}, {"time_budget": "1"}, {"stl_after": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Schedule(**{"num_steps": 10, "time_budget": None, "stl_after": None, **bad})
    assert "time_budget" in STOP_REASONS


def test_time_budget_stops_the_fit_and_decays_the_rate_along_the_way():
    fit(funnel, make_guide("meanfield", funnel), num_steps=1, progress=False)  # torch's one-off imports
    guide = make_guide("meanfield", funnel)
    t = time.perf_counter()
    r = fit(funnel, guide, num_steps=10**7, time_budget=3.0, lr=0.02, seed=0, init=None, progress=False)
    assert r.stop_reason == "time_budget" and 1 < r.num_steps < 10**7
    assert time.perf_counter() - t < 15.0
    # the rate followed the progress: from 0.02 to about 0.02 * 0.1 at the budget's end
    assert 0.002 <= r.final_lr < 0.004


def test_steps_bind_before_a_generous_budget():
    r = fit(funnel, make_guide("meanfield", funnel), num_steps=30, time_budget=600, seed=0, progress=False)
    assert r.stop_reason == "completed" and r.num_steps == 30 and r.time_budget == 600


def test_stl_switches_on_halfway_for_invertible_flows_only_and_is_set_back():
    iaf = AutoIAF(funnel, num_flows=1, hidden_dims=(8,))
    r = fit(funnel, iaf, num_steps=20, seed=0, progress=False)
    assert r.stl_step == 10 and iaf.stl is False
    planar = AutoPlanar(funnel, num_flows=2)
    assert fit(funnel, planar, num_steps=20, seed=0, progress=False).stl_step is None
    assert fit(funnel, AutoIAF(funnel), num_steps=20, stl_after=None, progress=False).stl_step is None


def test_stl_phase_skips_sequential_inverse_flows_above_the_dimension_cap():
    def wide() -> None:
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([STL_MAX_SEQUENTIAL_DIM + 1]).to_event(1))

    iaf = AutoIAF(wide, num_flows=1, hidden_dims=(40,))
    assert fit(wide, iaf, num_steps=10, seed=0, progress=False).stl_step is None  # D-pass inverse: skipped
    realnvp = make_guide("realnvp", wide, num_flows=2, hidden_dims=(8,))
    assert fit(wide, realnvp, num_steps=10, seed=0, progress=False).stl_step == 5  # one-pass inverse: kept
    forced = AutoIAF(wide, num_flows=1, hidden_dims=(40,), stl=True)  # an explicit stl=True still holds
    fit(wide, forced, num_steps=2, seed=0, progress=False)
    assert forced.stl is True


def test_a_model_that_does_not_broadcast_over_particles_falls_back_with_a_warning():
    x, y = _data()

    def flat(x, y):  # `x @ w` breaks under a leading particle dimension
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([P]).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)

    with pytest.warns(UserWarning, match="does not broadcast over a leading particle dimension"):
        r = fit(flat, make_guide("meanfield", flat), x, y, num_steps=5, num_particles=3, progress=False)
    assert r.path == "trace_elbo" and "one by one" in r.path_reason
    assert all(map(math.isfinite, r.losses))


def test_a_model_that_broadcasts_particles_into_a_wrong_shape_is_caught_not_mixed():
    # `regression` runs under 16 particles but its likelihood gets shape (16, 16, 40): b of one particle
    # with w of another. Pyro's Trace_ELBO accepts it (a wrong ELBO); fit() must not.
    x, y = _data()
    with pytest.warns(UserWarning, match="a dimension left of the particle plate"):
        r = fit(regression, make_guide("fullrank", regression), x, y, num_steps=3, progress=False)
    assert r.path == "trace_elbo" and "(16, 16, 40)" in r.path_reason
    # one by one, the loss is the exact posterior's -ELBO = -log p(y) (Laplace is exact): about 59.8
    assert r.losses[0] < 70  # (fitting it with vectorised particles gave 1.8e8)


@pytest.mark.parametrize("name", ["fullrank", "realnvp", "iaf"])
def test_laplace_start_is_the_exact_gaussian_posterior(name):
    x, y = _data()
    mean, cov = exact_posterior(x, y)
    guide = make_guide(name, regression)
    guide(x, y)
    assert guide.init_to_laplace(x, y).startswith("laplace")
    with torch.no_grad():
        z = guide.get_posterior().sample((20000,)).double()
    # standardised mean error per coordinate (20,000 draws: Monte Carlo error ~0.007 sd)
    zero = torch.zeros(P + 1, dtype=torch.float64)
    torch.testing.assert_close((z.mean(0) - mean) / cov.diagonal().sqrt(), zero, atol=0.03, rtol=0)
    sd = z.std(0)
    torch.testing.assert_close(
        sd / cov.diagonal().sqrt(), torch.ones(P + 1, dtype=torch.float64), atol=0.03, rtol=0
    )
    corr = torch.corrcoef(z.T)
    exact_corr = cov / torch.outer(cov.diagonal().sqrt(), cov.diagonal().sqrt())
    torch.testing.assert_close(corr, exact_corr, atol=0.02, rtol=0)


def test_fit_takes_the_laplace_start_where_it_wins_and_keeps_its_own_on_a_funnel():
    x, y = _data()
    r = fit(regression, make_guide("meanfield", regression), x, y, num_steps=5, progress=False)
    assert r.init.startswith("laplace")
    r2 = fit(funnel, make_guide("realnvp", funnel), num_steps=5, progress=False)
    assert r2.init.startswith("own start")
    again = fit(funnel, r2.guide, num_steps=5, progress=False)  # a second fit continues: no new start
    assert again.init.startswith("continued")
    assert fit(
        regression, make_guide("fullrank", regression), x, y, num_steps=2, init=None, progress=False
    ).init == ("own start (init=None)")
    with pytest.raises(ValueError, match="init must be"):
        fit(funnel, make_guide("meanfield", funnel), num_steps=2, init="map", progress=False)


def test_a_whitened_flow_guide_round_trips_through_its_state_dict():
    x, y = _data()
    guide = make_guide("realnvp", regression)
    fit(regression, guide, x, y, num_steps=20, seed=0, progress=False)
    assert guide.whiten is not None
    fresh = make_guide("realnvp", regression)
    fresh.load_state_dict(guide.state_dict())
    z = guide.get_posterior().sample((5,))
    torch.testing.assert_close(fresh.log_prob_unconstrained(z, x, y), guide.log_prob_unconstrained(z, x, y))


def test_laplace_start_declines_subsampled_models_with_a_reason():
    def sub(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y), subsample_size=5):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y.index_select(0, torch.arange(5)))

    guide = make_guide("meanfield", sub)
    y = torch.zeros(20)
    guide(y)
    start, reason = laplace_start(sub, guide.prototype_trace, (y,), {})
    assert start is None and "subsampled" in reason


@pytest.mark.parametrize("name", ["realnvp", "iaf"])
def test_an_exact_guide_stops_as_converged_and_matches_the_posterior(name):
    x, y = _data()
    mean, cov = exact_posterior(x, y)
    guide = make_guide(name, vectorised_regression)
    # STL from the start: at the exact posterior its gradient is zero, so the guide stops moving and the
    # log-weights' variance falls to ~0 (at the default stl_after=0.5 this fit stopped at step 2,700 of 5,000)
    r = fit(vectorised_regression, guide, x, y, num_steps=5000, stl_after=0.0, seed=0, progress=False)
    assert r.path == "fast" and r.stop_reason == "converged" and r.num_steps <= 1000
    with torch.no_grad():
        z = guide.get_posterior().sample((20000,)).double()
    sd = cov.diagonal().sqrt()
    assert ((z.mean(0) - mean) / sd).abs().max() < 0.05
    assert ((z.std(0) / sd) - 1).abs().max() < 0.05


def test_a_guide_that_cannot_match_runs_to_its_budget_and_the_rule_can_be_switched_off():
    r = fit(funnel, make_guide("meanfield", funnel), num_steps=600, seed=0, progress=False)
    assert r.stop_reason == "completed" and r.num_steps == 600  # mean-field cannot fill a funnel
    x, y = _data()
    model = vectorised_regression
    r = fit(
        model,
        make_guide("fullrank", model),
        x,
        y,
        num_steps=300,
        early_stop=None,
        seed=0,
        progress=False,
    )
    assert r.stop_reason == "completed" and r.num_steps == 300
    rule = Converged()
    assert rule.should_stop([0.0] * 199, 16) is False  # too few steps
    assert rule.should_stop([0.0, 0.04] * 125, 16) is False  # K * var = 0.0064 > 0.005
    assert rule.should_stop([0.0, 0.02] * 125, 16) is True  # 0.0016
    with pytest.raises(ValueError, match="tol >= 0"):
        Converged(tol=-1.0)
    with pytest.raises(ValueError, match="early_stop must be"):
        fit(model, make_guide("fullrank", model), x, y, num_steps=2, early_stop="yes")
