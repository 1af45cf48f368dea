"""Tests of pyro_nf.diagnostics: importance weights, PSIS k-hat, ESS, ELBO and IW-ELBO."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyro_nf.evaluation.diagnostics import Diagnosis, diagnose, importance_log_weights, psis, verdict
from pyro_nf.guides.registry import make_guide
from pyro_nf.training.loop import fit

PRIOR_SD, NOISE_SD = 2.0, 1.0
Y = torch.tensor([0.8, 1.9, 1.1, 2.4, 0.3, 1.6, 1.2, 2.0])


def conjugate(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, NOISE_SD), obs=y)


def exact_posterior(y: torch.Tensor) -> tuple[float, float]:
    precision = 1 / PRIOR_SD**2 + len(y) / NOISE_SD**2
    return float(y.sum() / NOISE_SD**2 / precision), float(precision**-0.5)


def exact_log_evidence(y: torch.Tensor) -> float:
    y = y.double()
    cov = NOISE_SD**2 * torch.eye(len(y), dtype=torch.float64) + PRIOR_SD**2
    return float(dist.MultivariateNormal(torch.zeros_like(y), cov).log_prob(y))


def funnel() -> None:
    log_scale = pyro.sample("log_scale", dist.Normal(0.0, 3.0))
    with pyro.plate("dims", 9):
        pyro.sample("x", dist.Normal(0.0, torch.exp(log_scale / 2)))


def quick_fit(model, guide, *args, num_steps: int, lr: float, num_particles: int = 1) -> None:
    fit(model, guide, *args, num_steps=num_steps, lr=lr, num_particles=num_particles, progress=False)


def test_exact_guide_has_constant_log_weight_equal_to_log_evidence():
    # q = p(mu | y) exactly, so log p(y, mu) - log q(mu) = log p(y) for every draw.
    loc, scale = exact_posterior(Y)

    def exact_guide(y):
        pyro.sample("mu", dist.Normal(loc, scale))

    log_p, log_q = importance_log_weights(conjugate, exact_guide, Y, num_samples=64, batch_size=10)
    assert log_p.shape == log_q.shape == (64,)
    np.testing.assert_allclose(log_p - log_q, exact_log_evidence(Y), atol=1e-3)
    assert log_p.std() > 0.01  # the draws differ; only the weight is constant


def test_autocontinuous_log_q_includes_the_constraint_jacobian():
    # LogNormal target and an AutoDiagonalNormal at its exact parameters: log w == 0.
    def lognormal():
        pyro.sample("x", dist.LogNormal(0.3, 0.7))

    guide = AutoDiagonalNormal(lognormal)
    guide()
    guide.loc = PyroParam(torch.tensor([0.3]))
    guide.scale = PyroParam(torch.tensor([0.7]), constraints.positive)
    log_p, log_q = importance_log_weights(lognormal, guide, num_samples=100)
    np.testing.assert_allclose(log_p - log_q, 0.0, atol=1e-4)


def test_right_family_on_conjugate_model_is_good_and_iwelbo_matches_evidence():
    guide = AutoNormal(conjugate)
    quick_fit(conjugate, guide, Y, num_steps=400, lr=0.05)
    result = diagnose(conjugate, guide, Y, num_samples=10_000)
    assert result.num_draws == 10_000
    assert result.khat < 0.5
    assert abs(result.iwelbo - exact_log_evidence(Y)) < 0.05
    assert result.elbo <= result.iwelbo + 1e-9
    assert result.ess > 0.5 * result.num_draws
    assert result.verdict.startswith("good")


@pytest.mark.slow
def test_funnel_meanfield_is_unreliable_and_a_flow_does_better():
    meanfield = make_guide("meanfield", funnel)
    quick_fit(funnel, meanfield, num_steps=400, lr=0.03, num_particles=8)
    mf = diagnose(funnel, meanfield, num_samples=10_000)
    pyro.clear_param_store()
    flow = make_guide("iaf", funnel, num_flows=2, hidden_dims=(32,))
    quick_fit(funnel, flow, num_steps=400, lr=0.03, num_particles=8)
    nf = diagnose(funnel, flow, num_samples=10_000)
    assert mf.khat > 0.7
    assert mf.verdict.startswith("unreliable")
    assert nf.khat < mf.khat
    assert nf.elbo > mf.elbo  # the flow is also closer in KL(q || p)


def test_diagnose_sets_up_a_never_called_guide_and_batches_bound_the_draws():
    guide = AutoDiagonalNormal(conjugate)
    result = diagnose(conjugate, guide, Y, num_samples=250, batch_size=100)
    assert result.num_draws == 250 == result.log_p.size
    assert np.isfinite(result.log_weights).all()
    assert 1.0 <= result.ess <= 250
    assert result.guide == "AutoDiagonalNormal"


def test_registry_name_is_reported():
    guide = AutoNormal(conjugate)
    guide.registry_name = "meanfield"
    assert diagnose(conjugate, guide, Y, num_samples=200).guide == "meanfield"


def test_repr_is_readable():
    text = repr(diagnose(conjugate, AutoNormal(conjugate), Y, num_samples=500))
    for words in ("Pareto k-hat", "importance ESS", "IW-ELBO", "verdict:", "500 draws"):
        assert words in text


@pytest.mark.parametrize(
    "khat, label",
    [
        (0.2, "good"),
        (0.5, "usable with PSIS correction"),
        (0.7, "usable with PSIS correction"),
        (0.71, "unreliable"),
        (math.inf, "unknown"),
    ],
)
def test_verdict_uses_yao_thresholds(khat, label):
    assert verdict(khat).split(":")[0] == label


def test_summary_numbers_from_known_log_weights():
    rng = np.random.default_rng(1)
    lw = rng.normal(0.0, 0.1, size=4000)
    d = Diagnosis.from_log_densities(lw, np.zeros_like(lw), guide="g")
    assert d.elbo == pytest.approx(lw.mean())
    assert d.iwelbo == pytest.approx(np.log(np.mean(np.exp(lw))))
    assert d.num_tail == math.ceil(3 * math.sqrt(4000))
    assert d.khat < 0.5 and d.ess > 3900
    heavy = Diagnosis.from_log_densities(rng.standard_cauchy(4000), np.zeros(4000))
    assert heavy.khat > 0.7 and heavy.ess < 400


def test_constant_log_weights_mean_an_exact_guide():
    smoothed, khat = psis(np.full(100, -3.0))
    assert khat == -math.inf and verdict(khat).startswith("good")
    np.testing.assert_allclose(np.exp(smoothed), 0.01)


def test_psis_refuses_nan_log_weights():
    with pytest.raises(ValueError, match="NaN"):
        psis(np.array([0.0, np.nan, 1.0]))


def test_latent_site_missing_from_guide_and_not_enumerated_is_refused():
    def two_latents(y):
        pyro.sample("a", dist.Normal(0.0, 1.0))
        conjugate(y)

    guide = AutoNormal(pyro.poutine.block(two_latents, hide=["a"]))
    with pytest.raises(ValueError, match="neither in the guide nor marked for enumeration"):
        diagnose(two_latents, guide, Y, num_samples=10)


def test_draws_of_zero_model_density_are_reported():
    from pyro_nf.evaluation.diagnostics import Diagnosis

    log_p = np.array([-1.0, -2.0, -np.inf, -1.5])
    d = Diagnosis.from_log_densities(log_p, np.array([-1.2, -1.9, -3.0, -1.4]))
    assert d.num_impossible == 1
    assert d.elbo == -np.inf
    assert "1 draw(s) have log p = -inf" in repr(d)
    assert Diagnosis.from_log_densities(log_p[[0, 1, 3]], np.zeros(3)).num_impossible == 0


def test_a_guide_built_directly_is_named_after_its_class():
    import pyro
    import pyro.distributions as dist

    from pyro_nf import AutoIAF, diagnose

    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    d = diagnose(model, AutoIAF(model, num_flows=1, hidden_dims=(4,)), num_samples=200)
    assert "Diagnosis of guide 'AutoIAF'" in repr(d)
