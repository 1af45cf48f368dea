"""Tests of pyro_nf.arviz: InferenceData from any guide, PSIS resampling, restarts as chains."""

from __future__ import annotations

import json

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.ops.indexing import Vindex

from pyro_nf.comparison import to_inference_data_restarts
from pyro_nf.evaluation.bridge import importance_resample, to_inference_data
from pyro_nf.guides.registry import available_guides, make_guide
from pyro_nf.training.loop import fit

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUPS, PER_GROUP = 3, 4
Y_HIER = torch.tensor([[0.5, 1.2, 0.9, 1.4], [-0.3, 0.1, -0.8, 0.2], [2.1, 1.7, 2.6, 1.9]])
Y_CONJ = torch.tensor([0.8, 1.9, 1.1, 2.4, 0.3, 1.6, 1.2, 2.0])
GROUP_NAMES = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "observed_data")


def hierarchical(y: torch.Tensor) -> None:
    """Nested plates, a positive site, a vector-valued site and a deterministic site."""
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    pyro.sample("v", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("groups", GROUPS, dim=-2):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        with pyro.plate("obs", PER_GROUP, dim=-1):
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)
    pyro.deterministic("tau_sq", tau**2)


def conjugate(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def idata_per_guide() -> dict[str, az.InferenceData]:
    """One (unfitted, set-up) InferenceData per registered guide, built under a fixed seed."""
    out = {}
    for name in available_guides():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        out[name] = to_inference_data(
            hierarchical, make_guide(name, hierarchical), Y_HIER, num_samples=40, batch_size=16
        )
    pyro.clear_param_store()
    return out


@pytest.mark.parametrize("name", available_guides())
def test_posterior_group(idata_per_guide, name):
    post = idata_per_guide[name].posterior
    assert set(post.data_vars) == {"mu", "tau", "v", "theta", "tau_sq"}
    assert dict(post.sizes) == {"chain": 1, "draw": 40, "groups": GROUPS, "v_dim_0": 2}
    assert post["theta"].dims == ("chain", "draw", "groups")
    assert post["v"].dims == ("chain", "draw", "v_dim_0")
    assert (post["tau"] > 0).all()  # constrained values
    np.testing.assert_allclose(post["tau_sq"], post["tau"] ** 2, rtol=1e-5)
    assert post.attrs["guide"] == name
    assert isinstance(json.loads(post.attrs["guide_config"]), dict)


@pytest.mark.parametrize("name", available_guides())
def test_sample_stats_group(idata_per_guide, name):
    idata = idata_per_guide[name]
    stats, post = idata.sample_stats, idata.posterior
    assert set(stats.data_vars) == {"log_p", "log_q", "log_weight"}
    np.testing.assert_allclose(stats["log_weight"], stats["log_p"] - stats["log_q"])
    # log p(x, z) recomputed from the posterior draws and the model's densities
    mu, tau = post["mu"].values, post["tau"].values
    theta, v = post["theta"].values, post["v"].values
    expected = (
        dist.Normal(0.0, 2.0).log_prob(torch.tensor(mu)).double()
        + dist.HalfNormal(1.0).log_prob(torch.tensor(tau)).double()
        + dist.Normal(0.0, 1.0).log_prob(torch.tensor(v)).sum(-1).double()
        + dist.Normal(torch.tensor(mu)[..., None], torch.tensor(tau)[..., None])
        .log_prob(torch.tensor(theta))
        .sum(-1)
        .double()
        + torch.tensor(idata.log_likelihood["y"].values).sum((-1, -2)).double()
    )
    np.testing.assert_allclose(stats["log_p"], expected.numpy(), rtol=1e-4, atol=1e-3)
    assert np.isfinite(stats["log_q"]).all()


@pytest.mark.parametrize("name", available_guides())
def test_log_likelihood_group(idata_per_guide, name):
    idata = idata_per_guide[name]
    lik = idata.log_likelihood["y"]
    assert lik.dims == ("chain", "draw", "groups", "obs")
    theta = torch.tensor(idata.posterior["theta"].values)[..., None]
    expected = dist.Normal(theta, 1.0).log_prob(Y_HIER)
    np.testing.assert_allclose(lik.values, expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", available_guides())
def test_posterior_predictive_group(idata_per_guide, name):
    idata = idata_per_guide[name]
    pred = idata.posterior_predictive["y"]
    assert pred.dims == ("chain", "draw", "groups", "obs")
    residual = pred.values - idata.posterior["theta"].values[..., None]
    assert abs(residual.mean()) < 0.2 and 0.8 < residual.std() < 1.2  # y ~ N(theta, 1)
    assert not np.allclose(pred.values, Y_HIER.numpy())


@pytest.mark.parametrize("name", available_guides())
def test_observed_data_group(idata_per_guide, name):
    obs = idata_per_guide[name].observed_data
    assert obs["y"].dims == ("groups", "obs")
    np.testing.assert_array_equal(obs["y"].values, Y_HIER.numpy())
    np.testing.assert_array_equal(obs["groups"].values, np.arange(GROUPS))
    np.testing.assert_array_equal(obs["obs"].values, np.arange(PER_GROUP))


def test_coords_are_shared_across_groups(idata_per_guide):
    idata = idata_per_guide["meanfield"]
    for group in GROUP_NAMES[2:]:
        assert idata[group]["groups"].values.tolist() == list(range(GROUPS))
    assert idata.posterior["v_dim_0"].values.tolist() == [0, 1]


def test_netcdf_round_trip_is_lossless(tmp_path):
    guide = make_guide("iaf", hierarchical)
    result = fit(hierarchical, guide, Y_HIER, num_steps=5, progress=False)
    idata = to_inference_data(hierarchical, guide, Y_HIER, num_samples=30, fit=result)
    assert idata.posterior.attrs["num_steps"] == 5
    assert idata.posterior.attrs["final_elbo"] == pytest.approx(-result.losses[-1])
    path = tmp_path / "idata.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups()) == set(GROUP_NAMES)
    for group in GROUP_NAMES:
        xr.testing.assert_identical(back[group], idata[group])


@pytest.mark.filterwarnings(
    "ignore:Estimated shape parameter of Pareto:UserWarning", "ignore:The inplace keyword:DeprecationWarning"
)
def test_arviz_functions_run_and_compare_ranks_two_guides():
    fits = {}
    for name in ("meanfield", "fullrank"):
        pyro.clear_param_store()
        guide = make_guide(name, hierarchical)
        fit(hierarchical, guide, Y_HIER, num_steps=200, lr=0.05, progress=False)
        fits[name] = to_inference_data(hierarchical, guide, Y_HIER, num_samples=300)
    summary = az.summary(fits["fullrank"], var_names=["mu", "tau", "theta"])
    assert len(summary) == 5 and np.isfinite(summary["mean"]).all()
    loo = az.loo(fits["meanfield"])
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == GROUPS * PER_GROUP
    table = az.compare(fits)
    assert set(table.index) == {"meanfield", "fullrank"}
    assert table["weight"].sum() == pytest.approx(1.0)
    axes = az.plot_pair(fits["fullrank"], var_names=["mu", "tau"])
    assert np.asarray(axes).size >= 1
    axes = az.plot_forest(list(fits.values()), model_names=list(fits), var_names=["theta"])
    assert np.asarray(axes).size >= 1
    plt.close("all")


@config_enumerate
def mixture(y: torch.Tensor) -> None:
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    loc0 = pyro.sample("loc0", dist.Normal(-2.0, 2.0))
    loc1 = pyro.sample("loc1", dist.Normal(2.0, 2.0))
    locs = torch.stack([loc0, loc1], -1)
    with pyro.plate("data", len(y)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., assignment], 1.0), obs=y)


Y_MIX = torch.tensor([-2.5, -1.8, -2.2, 1.9, 2.4, 2.2, 1.5])


def test_enumerated_mixture_log_p_matches_trace_enum_elbo():
    guide = make_guide("meanfield", poutine.block(mixture, hide=["assignment"]))
    fit(mixture, guide, Y_MIX, num_steps=20, progress=False)
    idata = to_inference_data(mixture, guide, Y_MIX, num_samples=6)
    post, stats = idata.posterior, idata.sample_stats
    assert json.loads(post.attrs["enumerated_sites"]) == ["assignment"]
    assert post["assignment"].dims == ("chain", "draw", "data")
    assert set(np.unique(post["assignment"].values)) <= {0, 1}
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    for s in range(6):
        draw = {k: torch.tensor(post[k].values[0, s]) for k in ("weights", "loc0", "loc1")}
        conditioned = poutine.condition(mixture, data=draw)
        # A guide with no sites: the loss is -log p(y, draw) with the assignments summed out.
        expected = -elbo.loss(conditioned, lambda y: None, Y_MIX)
        assert stats["log_p"].values[0, s] == pytest.approx(float(expected), abs=1e-3)
        # Pointwise likelihood is marginal over the assignment; it adds up to log p.
        prior = sum(float(dist.Normal(m, 2.0).log_prob(draw[k])) for k, m in (("loc0", -2.0), ("loc1", 2.0)))
        prior += float(dist.Dirichlet(torch.ones(2)).log_prob(draw["weights"]))
        total = prior + idata.log_likelihood["obs"].values[0, s].sum()
        assert stats["log_p"].values[0, s] == pytest.approx(total, abs=1e-3)


def gamma_poisson(y: torch.Tensor) -> None:
    rate = pyro.sample("rate", dist.Gamma(1.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Poisson(rate), obs=y)


def test_importance_resampling_halves_the_error_of_a_skewed_posterior_mean():
    # Posterior Gamma(1 + sum y, 1 + n) = Gamma(2, 3): mean 2/3, skewed on the log scale, so a
    # log-normal (mean-field) guide's mean is biased.
    y = torch.tensor([0.0, 1.0])
    exact_mean = 2.0 / 3.0
    # An overdispersed log-normal (scale 1.5 on the log scale, wider than the posterior's 0.8), where
    # importance sampling is well-posed. A *fitted* mean-field guide is not: at the reverse-KL optimum its
    # Gaussian left tail is thinner than the posterior's exp(2u), so k-hat read 2.6-3.8 after 1,000 steps
    # (seeds 0-3), and a 300-step fit's k-hat (0.64-3.2 over four seeds) passed this test by luck of the seed.
    # Measured here (seeds 0-2): guide mean error 1.56 / 0.57 / 0.71, resampled 0.002 / 0.002 / 0.006.
    guide = make_guide("meanfield", gamma_poisson, init_scale=1.5)
    idata = to_inference_data(gamma_poisson, guide, y, num_samples=4000)
    corrected = importance_resample(idata, on_bad_khat="raise")
    guide_error = abs(float(idata.posterior["rate"].mean()) - exact_mean)
    resampled_error = abs(float(corrected.posterior["rate"].mean()) - exact_mean)
    assert resampled_error <= 0.5 * guide_error
    assert dict(corrected.posterior.sizes) == {"chain": 1, "draw": 4000}
    assert corrected.posterior.attrs["resample_khat"] <= 0.7
    # the groups are resampled together: each draw keeps its own log-likelihood
    rate = torch.tensor(corrected.posterior["rate"].values)[..., None]
    np.testing.assert_allclose(
        corrected.log_likelihood["y"].values, dist.Poisson(rate).log_prob(y).numpy(), rtol=1e-5
    )
    xr.testing.assert_identical(corrected.observed_data, idata.observed_data)


def funnel() -> None:
    log_scale = pyro.sample("log_scale", dist.Normal(0.0, 3.0))
    with pyro.plate("dims", 9):
        pyro.sample("x", dist.Normal(0.0, torch.exp(log_scale / 2)))


def test_importance_resample_raises_or_warns_on_bad_khat():
    guide = make_guide("meanfield", funnel, init_scale=0.05)
    idata = to_inference_data(funnel, guide, num_samples=2000)
    with pytest.raises(ValueError, match="k-hat"):
        importance_resample(idata)
    with pytest.warns(UserWarning, match="k-hat"):
        corrected = importance_resample(idata, on_bad_khat="warn", num_draws=100)
    assert corrected.posterior.sizes["draw"] == 100
    with pytest.raises(ValueError, match="on_bad_khat"):
        importance_resample(idata, on_bad_khat="ignore")


def bimodal() -> None:
    z = pyro.sample("z", dist.Normal(0.0, 5.0))
    modes = torch.stack([dist.Normal(-3.0, 0.5).log_prob(z), dist.Normal(3.0, 0.5).log_prob(z)])
    pyro.factor("modes", torch.logsumexp(modes, 0))


def test_restarts_as_chains_flag_optimisations_that_disagree():
    from pyro.infer.autoguide import init_to_uniform

    def factory(model):
        return make_guide("meanfield", model, init_loc_fn=init_to_uniform(radius=5.0))

    fit_kwargs = {"num_steps": 150, "lr": 0.1, "lr_decay": None}
    split = to_inference_data_restarts(
        bimodal, factory, seeds=(0, 1, 2, 3), num_samples=200, fit_kwargs=fit_kwargs
    )
    agree = to_inference_data_restarts(
        conjugate, factory, Y_CONJ, seeds=(0, 1, 2, 3), num_samples=200, fit_kwargs=fit_kwargs
    )
    assert dict(split.posterior.sizes) == {"chain": 4, "draw": 200}
    assert float(az.rhat(split)["z"]) > 1.2  # restarts found both modes
    assert float(az.rhat(agree)["mu"]) < 1.05
    assert json.loads(split.posterior.attrs["restart_seeds"]) == [0, 1, 2, 3]
    assert len(json.loads(split.posterior.attrs["restart_final_elbos"])) == 4
