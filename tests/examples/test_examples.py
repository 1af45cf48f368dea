"""Tests for the built-in examples: models, data, references, exact samplers and densities."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.poutine.util import site_is_subsample

from pyro_nf.examples import available_examples, get_example
from pyro_nf.examples._data import (
    QUANTILE_LEVELS,
    draws_from_json,
    load_json,
    mixture_quantiles,
    normal_quantiles,
)

EXAMPLES = available_examples()
EXACT = ["funnel", "banana"]
#: The keyword that carries the observations, for examples that have any.
OBSERVED_KWARG = {
    "eight_schools_centered": "y",
    "eight_schools_noncentered": "y",
    "german_credit": "y",
    "radon": "log_radon",
    "kilpisjarvi": "y",
    "sblrc_blr": "y",
    "arK": "y",
    "gp_pois_regr": "k",
    "low_dim_gauss_mix": "y",
    "stochastic_volatility": "centered_returns",
}
#: kilpisjarvi's sigma has an improper flat prior: the model has no prior predictive.
PRIOR_PREDICTIVE = [name for name in OBSERVED_KWARG if name != "kilpisjarvi"]
#: Examples with posteriordb reference draws.
WITH_DRAWS = [
    "eight_schools_centered",
    "eight_schools_noncentered",
    "kilpisjarvi",
    "sblrc_blr",
    "arK",
    "gp_pois_regr",
    "low_dim_gauss_mix",
]
MAX_PLATE_NESTING = 1


def _sites(trace: poutine.Trace) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(latent sample sites, deterministic sites) of a trace, as {name: value}."""
    latent, deterministic = {}, {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["infer"].get("_deterministic"):
            deterministic[name] = site["value"]
        elif not site["is_observed"]:
            latent[name] = site["value"]
    return latent, deterministic


def test_available_examples_lists_the_twelve() -> None:
    assert set(EXAMPLES) == {
        "funnel",
        "banana",
        "eight_schools_centered",
        "eight_schools_noncentered",
        "german_credit",
        "radon",
        "kilpisjarvi",
        "sblrc_blr",
        "arK",
        "gp_pois_regr",
        "low_dim_gauss_mix",
        "stochastic_volatility",
    }
    assert set(OBSERVED_KWARG) == set(EXAMPLES) - set(EXACT)


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ValueError, match="eight_schools_centered"):
        get_example("nope")


@pytest.mark.parametrize("name", EXAMPLES)
def test_model_runs_and_reference_matches_sites(name: str) -> None:
    ex = get_example(name)
    assert ex.name == name and ex.description
    trace = poutine.trace(ex.model).get_trace(**ex.data)
    assert torch.isfinite(trace.log_prob_sum())
    latent, deterministic = _sites(trace)
    assert set(latent) <= set(ex.reference) <= set(latent) | set(deterministic)
    values = {**latent, **deterministic}
    for site, stats in ex.reference.items():
        assert {"mean", "sd"} <= set(stats)
        for stat, array in stats.items():
            assert isinstance(array, np.ndarray), (site, stat)
            assert array.shape == values[site].shape, (site, stat)
        assert np.all(stats["sd"] > 0)
    if ex.reference_draws is not None:
        assert set(ex.reference_draws) == set(ex.reference)
        for site, draws in ex.reference_draws.items():
            assert draws.shape[1:] == values[site].shape
            assert draws.shape[0] == 1000


@pytest.mark.parametrize("name", EXAMPLES)
def test_data_dtypes_follow_default_and_are_fresh(name: str) -> None:
    ex = get_example(name)
    for key, value in ex.data.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert value.dtype == torch.get_default_dtype(), key
        else:
            assert isinstance(value, int) or value.dtype == torch.long, key
    if name in OBSERVED_KWARG:
        kwarg = OBSERVED_KWARG[name]
        ex.data[kwarg].add_(1.0)
        assert not torch.equal(get_example(name).data[kwarg], ex.data[kwarg])


def test_data_dtype_is_read_at_call_time() -> None:
    old = torch.get_default_dtype()
    other = torch.float64 if old == torch.float32 else torch.float32
    try:
        torch.set_default_dtype(other)
        assert get_example("eight_schools_centered").data["y"].dtype == other
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("name", PRIOR_PREDICTIVE)
def test_prior_predictive_vectorised(name: str) -> None:
    ex = get_example(name)
    kwarg = OBSERVED_KWARG[name]
    data = {**ex.data, kwarg: None}
    draws = Predictive(ex.model, num_samples=3, parallel=True)(**data)
    observed_site = "obs" if kwarg == "y" and name.startswith("eight") else kwarg
    assert draws[observed_site].shape == (3, *ex.data[kwarg].shape)
    assert torch.isfinite(draws[observed_site]).all()


@pytest.mark.parametrize("nesting", [MAX_PLATE_NESTING, MAX_PLATE_NESTING + 1])
@pytest.mark.parametrize("name", EXAMPLES)
def test_svi_with_vectorised_particles(name: str, nesting: int) -> None:
    # The particle plate sits at dim -nesting-1: right next to the model's plates, or one further.
    ex = get_example(name)
    guide = AutoNormal(ex.model)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=nesting)
    svi = SVI(ex.model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    losses = [svi.step(**ex.data) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)


# ---- exact examples -------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXACT)
def test_log_density_is_the_model(name: str) -> None:
    ex = get_example(name)
    assert ex.log_density is not None and ex.exact_sampler is not None
    points = ex.exact_sampler(4, 1)
    # Also points off the typical set: each draw scaled up.
    points = {k: torch.cat([v, 1.5 * v]) for k, v in points.items()}
    expected = ex.log_density(points)
    assert expected.shape == (8,)
    for i in range(8):
        point = {k: v[i] for k, v in points.items()}
        trace = poutine.trace(poutine.condition(ex.model, data=point)).get_trace(**ex.data)
        assert trace.log_prob_sum().item() == pytest.approx(expected[i].item(), rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("name", EXACT)
def test_exact_sampler_matches_reference(name: str) -> None:
    ex = get_example(name)
    draws = ex.exact_sampler(100_000, 0)
    again = ex.exact_sampler(100_000, 0)
    probs = torch.tensor(list(QUANTILE_LEVELS.values()), dtype=torch.float64)
    for site, stats in ex.reference.items():
        assert torch.equal(draws[site], again[site])
        values = draws[site].double()
        assert values.shape[0] == 100_000
        sd = torch.from_numpy(stats["sd"])
        assert torch.allclose(values.mean(0), torch.from_numpy(stats["mean"]), atol=0.02 * sd.max())
        quantiles = torch.quantile(values, probs, dim=0)
        for row, key in enumerate(QUANTILE_LEVELS):
            ref = torch.from_numpy(stats[key])
            assert torch.allclose(quantiles[row], ref, rtol=0.02, atol=0.03), (site, key)
    # Sample sds only where they are stable (the funnel's x has no finite kurtosis to speak of).
    checked = ["log_scale"] if name == "funnel" else ["x0", "x1"]
    for site in checked:
        assert draws[site].double().std().item() == pytest.approx(float(ex.reference[site]["sd"]), rel=0.02)


def test_funnel_reference_agrees_with_json() -> None:
    ref = get_example("funnel").reference
    doc = load_json("neals_funnel_10d.json")
    sds = doc["reference"]["x"]["sd"]
    assert float(ref["log_scale"]["sd"]) == pytest.approx(sds[0])
    np.testing.assert_allclose(ref["x"]["sd"], sds[1:], rtol=1e-5)
    for key, value in doc["reference_extra"]["x0_quantiles"].items():
        assert float(ref["log_scale"][key]) == pytest.approx(value, abs=1e-5)
    np.testing.assert_allclose(ref["x"]["q50"], 0.0, atol=1e-12)
    np.testing.assert_allclose(ref["x"]["q05"], -ref["x"]["q95"], rtol=1e-10)


def test_banana_reference_agrees_with_json() -> None:
    ref = get_example("banana").reference
    sds = load_json("banana.json")["reference"]["x"]["sd"]
    assert float(ref["x0"]["sd"]) == pytest.approx(sds[0])
    assert float(ref["x1"]["sd"]) == pytest.approx(math.sqrt(19)) == pytest.approx(sds[1])


def test_mixture_quantiles_recovers_a_normal() -> None:
    # X = a*u + e with u, e ~ N(0,1): P(X <= q | u) = Phi(q - a u), so X ~ N(0, sqrt(1 + a^2)).
    a = 2.5
    got = mixture_quantiles(lambda q, u: q - a * u)
    want = list(normal_quantiles(0.0, math.sqrt(1 + a**2)).values())
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_draws_from_json_groups_columns() -> None:
    block = {"columns": ["mu", "theta[2]", "theta[1]"], "draws": [[1.0, 3.0, 2.0], [4.0, 6.0, 5.0]]}
    out = draws_from_json(block)
    np.testing.assert_array_equal(out["mu"], [1.0, 4.0])
    np.testing.assert_array_equal(out["theta"], [[2.0, 3.0], [5.0, 6.0]])
    with pytest.raises(ValueError, match="theta"):
        draws_from_json({"columns": ["theta[1]", "theta[3]"], "draws": [[1.0, 2.0]]})


# ---- posteriordb and Inference Gym examples --------------------------------------------------


@pytest.mark.parametrize("name", ["eight_schools_centered", "eight_schools_noncentered"])
def test_eight_schools_data_and_draws(name: str) -> None:
    ex = get_example(name)
    raw = load_json(f"{name}.json")["data"]
    assert ex.data["J"] == 8
    assert ex.data["y"][0].item() == 28.0
    assert ex.data["sigma"].tolist() == raw["sigma"]
    # The thinned draws summarise like the full reference (1,000 of 10,000 draws).
    for site, stats in ex.reference.items():
        draws = ex.reference_draws[site]
        assert np.all(np.abs(draws.mean(0) - stats["mean"]) < 0.15 * stats["sd"]), site


def test_eight_schools_noncentered_theta_is_deterministic() -> None:
    ex = get_example("eight_schools_noncentered")
    trace = poutine.trace(ex.model).get_trace(**ex.data)
    theta = trace.nodes["theta"]["value"]
    mu, tau = trace.nodes["mu"]["value"], trace.nodes["tau"]["value"]
    assert torch.allclose(theta, mu + tau * trace.nodes["theta_trans"]["value"])
    d = ex.reference_draws
    rebuilt = d["mu"][:, None] + d["tau"][:, None] * d["theta_trans"]
    np.testing.assert_allclose(rebuilt, d["theta"], rtol=1e-4, atol=1e-4)


def test_german_credit_data() -> None:
    ex = get_example("german_credit")
    x, y = ex.data["features"].double(), ex.data["y"]
    raw = load_json("german_credit_logistic.json")["data"]
    assert x.shape == (1000, 24) and y.shape == (1000,)
    assert torch.allclose(x.mean(0), torch.zeros(24, dtype=x.dtype), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(24, dtype=x.dtype), atol=1e-5)
    assert int(y.sum()) == 300
    assert y.tolist() == [float(v) for v in raw["labels"]]
    raw_x = torch.tensor(raw["raw_features"], dtype=torch.float64)
    assert torch.allclose(raw_x.mean(0), torch.tensor(raw["feature_mean"], dtype=torch.float64))
    assert torch.allclose(
        raw_x.std(0, unbiased=False), torch.tensor(raw["feature_std_ddof0"], dtype=torch.float64), rtol=1e-5
    )


def test_radon_data() -> None:
    ex = get_example("radon")
    raw = load_json("radon_mn_contextual_halfnormal.json")["data"]
    county = ex.data["county"]
    assert ex.data["J"] == 85 and county.shape == (919,)
    assert int(county.min()) == 0 and int(county.max()) == 84
    assert torch.allclose(
        ex.data["log_radon"].double(), torch.tensor(raw["log_radon"], dtype=torch.float64), atol=1e-5
    )
    assert torch.allclose(
        ex.data["floor_by_county"].double(),
        torch.tensor(raw["floor_by_county"], dtype=torch.float64),
        atol=1e-5,
    )


# ---- the six posteriordb / Inference Gym models added for the accuracy benchmark --------------


def _latent_fns(ex) -> dict:
    trace = poutine.trace(ex.model).get_trace(**ex.data)
    latent, _ = _sites(trace)
    return {name: trace.nodes[name]["fn"] for name in latent}


def _unconstrained_scores(ex, draws: dict[str, np.ndarray]) -> torch.Tensor:
    r"""Per-draw gradient of :math:`\\log p(T(u), y) + \\log|J_T(u)|` in the unconstrained
    coordinates :math:`u` (all latent sites flattened), shape ``(n, D)``: one vectorised pass over
    a plate of draws at dim -2."""
    n = len(next(iter(draws.values())))
    unconstrained, values, log_det = {}, {}, torch.zeros(n, dtype=torch.float64)
    for site, fn in _latent_fns(ex).items():
        transform = biject_to(fn.support)
        x = torch.as_tensor(draws[site], dtype=torch.float64)
        u = transform.inv(x).detach().requires_grad_(True)
        value = transform(u)
        log_det = log_det + transform.log_abs_det_jacobian(u, value).reshape(n, -1).sum(-1)
        unconstrained[site] = u
        # Left of the model's plate dims (MAX_PLATE_NESTING of them) sits the plate of draws.
        pad = (1,) * (MAX_PLATE_NESTING - len(fn.batch_shape))
        values[site] = value.reshape(n, *pad, *fn.batch_shape, *fn.event_shape)
    with pyro.plate("draws", n, dim=-2):
        trace = poutine.trace(poutine.condition(ex.model, data=values)).get_trace(**ex.data)
    total = trace.log_prob_sum() + log_det.sum()
    grads = torch.autograd.grad(total, list(unconstrained.values()))
    return torch.cat([g.reshape(n, -1) for g in grads], dim=-1)


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("name", WITH_DRAWS)
def test_reference_draws_satisfy_the_score_identity(name: str, float64) -> None:
    # Under the posterior, E[grad_u log p(u | y)] = 0 (unconstrained coordinates, Jacobian included).
    # At 1,000 nearly independent reference draws each coordinate's mean score is ~N(0, se^2): a
    # model with a wrong prior or likelihood has a non-zero mean score there.
    ex = get_example(name)
    scores = _unconstrained_scores(ex, ex.reference_draws)
    assert torch.isfinite(scores).all()
    t = scores.mean(0) / (scores.std(0) / math.sqrt(scores.shape[0]))
    assert t.abs().max().item() < 4.5, t


@pytest.mark.parametrize("name", ["sblrc_blr", "arK"])
def test_score_identity_fails_for_shifted_draws(name: str, float64) -> None:
    # The check above can fail: the same draws with one scalar site shifted by half a reference sd are
    # not from the posterior, and the mean score says so.
    ex = get_example(name)
    site = list(ex.reference_draws)[-1]
    draws = dict(ex.reference_draws)
    draws[site] = draws[site] + 0.5 * ex.reference[site]["sd"]
    scores = _unconstrained_scores(ex, draws)
    t = scores.mean(0) / (scores.std(0) / math.sqrt(scores.shape[0]))
    assert t.abs().max().item() > 10


@pytest.mark.parametrize(
    "name", ["kilpisjarvi", "sblrc_blr", "arK", "gp_pois_regr", "low_dim_gauss_mix", "stochastic_volatility"]
)
def test_log_density_finite_at_reference_mean(name: str) -> None:
    ex = get_example(name)
    point = {
        site: torch.as_tensor(stats["mean"], dtype=torch.get_default_dtype())
        for site, stats in ex.reference.items()
    }
    latent, _ = _sites(poutine.trace(ex.model).get_trace(**ex.data))
    point = {site: value for site, value in point.items() if site in latent}
    trace = poutine.trace(poutine.condition(ex.model, data=point)).get_trace(**ex.data)
    assert torch.isfinite(trace.log_prob_sum())


def test_kilpisjarvi_sigma_prior_is_flat_and_priors_match_json() -> None:
    from pyro_nf.examples._kilpisjarvi import ALPHA_PRIOR, BETA_PRIOR

    raw = load_json("kilpisjarvi.json")["data"]
    assert ALPHA_PRIOR == (raw["pmualpha"], raw["psalpha"])
    assert BETA_PRIOR == (raw["pmubeta"], raw["psbeta"])
    ex = get_example("kilpisjarvi")
    trace = poutine.trace(ex.model).get_trace(**ex.data)
    fn = trace.nodes["sigma"]["fn"]
    values = torch.tensor([1e-3, 1.0, 1e3])
    assert torch.equal(fn.log_prob(values), torch.zeros(3))
    assert fn.support is torch.distributions.constraints.positive


def test_ark_lags() -> None:
    ex = get_example("arK")
    series = load_json("arK.json")["data"]["y"]
    lags, y = ex.data["lags"], ex.data["y"]
    assert lags.shape == (195, 5) and y.shape == (195,)
    assert y[0].item() == pytest.approx(series[5])
    assert lags[0].tolist() == pytest.approx(series[4::-1])
    assert lags[-1, 0].item() == pytest.approx(series[-2])


def test_gp_f_is_the_cholesky_map_and_matches_its_reference() -> None:
    from pyro_nf.examples._gp_pois_regr import gp_pois_regr_f

    ex = get_example("gp_pois_regr")
    draws, ref = ex.reference_draws, ex.reference["f"]
    assert np.all(np.abs(draws["f"].mean(0) - ref["mean"]) < 0.15 * ref["sd"])
    # Hand-built kernel for one draw.
    x = ex.data["x"].double()
    rho, alpha, f_tilde = (torch.as_tensor(draws[s][0]) for s in ("rho", "alpha", "f_tilde"))
    kernel = alpha**2 * torch.exp(-((x[:, None] - x) ** 2) / (2 * rho**2)) + 1e-10 * torch.eye(11)
    expected = torch.linalg.cholesky(kernel) @ f_tilde
    np.testing.assert_allclose(gp_pois_regr_f(x, rho, alpha, f_tilde).numpy(), expected.numpy(), rtol=1e-10)
    # float32 inputs: the factor is taken in float64 and cast back, not a float32 Cholesky failure.
    f32 = gp_pois_regr_f(x.float(), rho.float(), alpha.float(), f_tilde.float())
    assert f32.dtype == torch.float32 and torch.allclose(f32.double(), expected, atol=1e-4)


def test_gauss_mix_ordered_prior() -> None:
    from pyro_nf.examples._gauss_mix import OrderedNormal

    d = OrderedNormal(0.0, 2.0, 2)
    v = torch.tensor([[-1.0, 0.5], [0.5, -1.0]])
    log_p = d.log_prob(v)
    normal = torch.distributions.Normal(0.0, 2.0).log_prob(v[0]).sum() + math.log(2)
    assert log_p[0].item() == pytest.approx(normal.item()) and log_p[1].item() == -math.inf
    draws = d.expand([3]).sample((1000,))
    assert draws.shape == (1000, 3, 2) and bool((draws[..., 0] < draws[..., 1]).all())
    # E[max of two N(0, 2)] = 2 / sqrt(pi).
    assert draws[..., 1].mean().item() == pytest.approx(2 / math.sqrt(math.pi), abs=0.1)


def test_gauss_mix_likelihood_is_the_marginal_mixture() -> None:
    ex = get_example("low_dim_gauss_mix")
    y = ex.data["y"]
    mu, sigma, theta = torch.tensor([-2.7, 2.9]), torch.tensor([1.0, 1.1]), torch.tensor(0.6)
    point = {"mu": mu, "sigma": sigma, "theta": theta}
    trace = poutine.trace(poutine.condition(ex.model, data=point)).get_trace(**ex.data)
    trace.compute_log_prob()
    normal = torch.distributions.Normal
    expected = torch.log(
        theta * normal(mu[0], sigma[0]).log_prob(y).exp()
        + (1 - theta) * normal(mu[1], sigma[1]).log_prob(y).exp()
    )
    assert torch.allclose(trace.nodes["y"]["log_prob"], expected, atol=1e-4)


def test_stochastic_volatility_density_and_data() -> None:
    from pyro_nf.examples._stochastic_volatility import StationaryAR1

    raw = load_json("stochastic_volatility_sp500_small.json")["data"]
    returns = np.diff(np.asarray(raw["closing_prices_last_101"], dtype=np.float64))
    ex = get_example("stochastic_volatility")
    np.testing.assert_allclose(
        ex.data["centered_returns"].double().numpy(), returns - returns.mean(), atol=1e-3
    )
    mu, phi, s = torch.tensor(7.9), torch.tensor(0.92), torch.tensor(0.5)
    h = torch.linspace(6.0, 10.0, 100)
    normal = torch.distributions.Normal
    expected = (
        normal(mu, s / torch.sqrt(1 - phi**2)).log_prob(h[0])
        + normal(mu + phi * (h[:-1] - mu), s).log_prob(h[1:]).sum()
    )
    assert StationaryAR1(mu, phi, s, 100).log_prob(h).item() == pytest.approx(expected.item(), rel=1e-6)
    point = {
        "persistence_of_volatility": phi,
        "mean_log_volatility": mu,
        "white_noise_shock_scale": s,
        "log_volatility": h,
    }
    trace = poutine.trace(poutine.condition(ex.model, data=point)).get_trace(**ex.data)
    trace.compute_log_prob()
    beta = torch.distributions.Beta(20.0, 1.5).log_prob((phi + 1) / 2) - math.log(2)
    assert trace.nodes["persistence_of_volatility"]["log_prob"].item() == pytest.approx(beta.item(), rel=1e-6)
    assert trace.nodes["persistence_of_volatility"]["fn"].support.lower_bound == -1.0
    r = ex.data["centered_returns"]
    lik = normal(0.0, torch.exp(h / 2)).log_prob(r).sum()
    assert trace.nodes["centered_returns"]["log_prob"].sum().item() == pytest.approx(lik.item(), rel=1e-6)


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["arK", "low_dim_gauss_mix"])
def test_short_nuts_recovers_the_reference(name: str, float64) -> None:
    # 200 + 200 NUTS draws (one chain, dense mass; minutes on 2 cores): means within 0.5 reference sd
    # and sds within 35% of the reference (a single short chain's sd has an ESS of ~100).
    # benchmarks/nuts_vs_reference.py runs the full comparison.
    ex = get_example(name)
    mcmc = MCMC(
        NUTS(ex.model, full_mass=True, target_accept_prob=0.9),
        num_samples=200,
        warmup_steps=200,
        disable_progbar=True,
    )
    mcmc.run(**ex.data)
    samples = mcmc.get_samples()
    for site in samples:
        stats = ex.reference[site]
        x = samples[site].double().numpy()
        assert np.all(np.abs(x.mean(0) - stats["mean"]) < 0.5 * stats["sd"]), site
        assert np.all(np.abs(x.std(0) / stats["sd"] - 1) < 0.35), site
