"""Accuracy against exact (funnel, banana) and long-NUTS (eight schools) reference posteriors.

Fixed seeds and budgets; tolerances that a broken flow would fail (mean-field, i.e. a flow whose
layers stay the identity, fails every one of them). Numbers measured when written are in comments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro.infer import Predictive

from pyro_nf import fit, make_guide
from pyro_nf.examples import get_example

pytestmark = pytest.mark.slow
NUM_DRAWS = 20_000


def _fit_and_draw(example_name: str, guide_name: str, **options):
    """Fit with fit()'s recipe (its defaults) at 6000 of its 10,000 default steps, to keep the suite fast,
    unless ``options`` say otherwise; 20,000 draws."""
    ex = get_example(example_name)
    guide = make_guide(guide_name, ex.model)
    fit(ex.model, guide, seed=0, progress=False, **{"num_steps": 6000, **options}, **ex.data)
    with torch.no_grad():
        draws = Predictive(
            ex.model, guide=guide, num_samples=NUM_DRAWS, parallel=True, return_sites=list(ex.reference)
        )(**ex.data)
    return ex, {k: v.reshape(NUM_DRAWS, -1).double().numpy() for k, v in draws.items()}


def _iqr(x: np.ndarray) -> np.ndarray:
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    return q75 - q25


@pytest.fixture(scope="module")
def funnel_meanfield():
    return _fit_and_draw("funnel", "meanfield")


@pytest.mark.parametrize("flow", ["realnvp", "iaf"])
def test_funnel_flows_at_their_defaults_recover_the_log_scale_and_the_neck(funnel_meanfield, flow):
    """The recipe of fit() (16 particles, 6000 steps, lr 0.01 -> 0.001, STL for the second half)."""
    ex, mf = funnel_meanfield
    _, fl = _fit_and_draw("funnel", flow)
    exact_sd = float(ex.reference["log_scale"]["sd"])  # 3
    exact_ls_iqr = 2 * 0.6744897501960817 * exact_sd
    assert abs(mf["log_scale"].std() - exact_sd) / exact_sd > 0.5  # mean-field: sd 0.48
    # measured: realnvp sd 2.776, IQR ratio 0.972 (before its ActNorm / input_scale="prior" defaults);
    # iaf 2.767, 0.950 (mean-field 0.476, 0.160)
    assert abs(fl["log_scale"].std() - exact_sd) / exact_sd < 0.1, fl["log_scale"].std()
    assert abs(_iqr(fl["log_scale"])[0] / exact_ls_iqr - 1) < 0.1
    exact_iqr = ex.reference["x"]["q75"] - ex.reference["x"]["q25"]
    ratio = np.median(_iqr(fl["x"]) / exact_iqr)  # measured: realnvp 0.958, iaf 0.930; mean-field 0.739
    assert abs(ratio - 1) < 0.1, ratio
    assert abs(np.median(_iqr(mf["x"]) / exact_iqr) - 1) > 0.2


@pytest.fixture(scope="module")
def banana_meanfield():
    return _fit_and_draw("banana", "meanfield")


def test_banana_realnvp_at_its_defaults_gets_both_marginal_sds_within_15_percent(banana_meanfield):
    ex, mf = banana_meanfield
    # fit()'s whole default budget (10,000 steps): at 6,000 the x1 sd ratio moves by ~0.1 between seeds at
    # the old defaults and the new alike (benchmarks/family_accuracy.py --steps 6000, seeds 0 / 1 / 2: new
    # 0.869 / 0.870 / 0.977, old 0.880 / 0.815 / 0.926; these draws read 0.844 with the new defaults)
    _, fl = _fit_and_draw("banana", "realnvp", num_steps=10_000)
    for site in ("x0", "x1"):  # exact sds 10 and sqrt(19) = 4.359
        exact = float(ex.reference[site]["sd"])
        # measured: realnvp 9.78 / 3.82 at 6,000 steps (before its ActNorm / input_scale="prior" defaults);
        # mean-field 3.88 / 1.00
        assert abs(mf[site].std() / exact - 1) > 0.5
        assert abs(fl[site].std() / exact - 1) < 0.15, (site, fl[site].std())


def test_eight_schools_centered_realnvp_at_its_defaults_gets_tau():
    # fit()'s whole default budget: at 6,000 steps tau's sd ratio moved by ~0.1 between seeds and with
    # the gradient clip (seed 0: 0.856 with it, 0.946 without; seed 1: 0.933 / 0.915)
    ex, draws = _fit_and_draw("eight_schools_centered", "realnvp", num_steps=10_000)
    ref_sd = float(ex.reference["tau"]["sd"])
    ref_iqr = float(ex.reference["tau"]["q75"] - ex.reference["tau"]["q25"])
    # measured (10,000 steps with the clip, seeds 0-5, 20,000 draws seeded apart): sd ratio 0.936, 0.899,
    # 0.953, 0.933, 0.945, 0.949 (without the clip 0.963, 0.876, 0.979, 0.978, 0.926, 0.921; mean-field: sd
    # 0.32 of 3.20)
    assert abs(draws["tau"].std() / ref_sd - 1) < 0.1
    assert abs(_iqr(draws["tau"])[0] / ref_iqr - 1) < 0.15


def test_funnel_maf_recovers_the_log_scale(funnel_meanfield):
    """MAF (sticking-the-landing gradient on, its default) at a shorter budget than the recipe."""
    ex, mf = funnel_meanfield
    _, maf = _fit_and_draw(
        "funnel", "maf", num_steps=3000, lr=0.01, num_particles=16, optimizer="clipped_adam", stl_after=None
    )
    exact_sd = float(ex.reference["log_scale"]["sd"])
    # measured: sd 2.446 (0.18) with STL; 2.748 without it, but that fit took ~6 min under load
    assert abs(maf["log_scale"].std() - exact_sd) / exact_sd < 0.2
    exact_iqr = ex.reference["x"]["q75"] - ex.reference["x"]["q25"]
    assert np.abs(_iqr(maf["x"]) - exact_iqr).mean() <= 0.5 * np.abs(_iqr(mf["x"]) - exact_iqr).mean()


# Issue 12's bar for the coupling guides at their defaults and fit()'s whole default recipe (10,000 steps
# of 16 particles: minutes each, so heavy): marginal sds (banana), log-scale sd / IQR and median x IQR
# (funnel) within 10% of exact. Seeds 0 / 1 / 2 of benchmarks/family_accuracy.py (same fits, draws seeded
# seed + 1) are in the guides' docstrings. These tests' own numbers (draws from the fit's stream): glow
# banana 0.987 / 0.983, funnel 0.955 / 0.988 / 0.990 (with lu_param_scale=0.1; at 1 the funnel read 0.868 /
# 0.924 / 0.900).
@pytest.mark.heavy
@pytest.mark.parametrize("flow", ["realnvp", "glow", "nsf"])
def test_coupling_guide_banana_marginal_sds_within_ten_percent(flow):
    ex, d = _fit_and_draw("banana", flow, num_steps=10_000)
    ratios = [d[s].std() / float(ex.reference[s]["sd"]) for s in ("x0", "x1")]
    assert all(abs(r - 1) < 0.1 for r in ratios), ratios


@pytest.mark.heavy
@pytest.mark.parametrize("flow", ["realnvp", "glow", "nsf"])
def test_coupling_guide_funnel_log_scale_and_x_iqrs_within_ten_percent(flow):
    ex, d = _fit_and_draw("funnel", flow, num_steps=10_000)
    exact_sd = float(ex.reference["log_scale"]["sd"])  # 3
    exact_iqr = ex.reference["x"]["q75"] - ex.reference["x"]["q25"]
    ls_sd = d["log_scale"].std() / exact_sd
    ls_iqr = _iqr(d["log_scale"])[0] / (2 * 0.6744897501960817 * exact_sd)
    x_iqr = float(np.median(_iqr(d["x"]) / exact_iqr))
    ok = abs(ls_sd - 1) < 0.1 and abs(ls_iqr - 1) < 0.1 and abs(x_iqr - 1) < 0.1
    assert ok, (ls_sd, ls_iqr, x_iqr)
