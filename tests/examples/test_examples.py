"""Tests for the built-in examples: models, data, references, exact samplers and densities."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
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
}
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


def test_available_examples_lists_the_six() -> None:
    assert {
        "funnel",
        "banana",
        "eight_schools_centered",
        "eight_schools_noncentered",
        "german_credit",
        "radon",
    } <= set(EXAMPLES)


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


@pytest.mark.parametrize("name", list(OBSERVED_KWARG))
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
