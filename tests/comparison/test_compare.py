"""compare(): table, reference metrics, every kind of reference, plots and the saved report."""

from __future__ import annotations

import math
from pathlib import Path

import arviz as az
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.figure import Figure
from torch.distributions import constraints

from pyro_nf.comparison import DEFAULT_GUIDES, Comparison, Reference, compare, plots
from pyro_nf.comparison.reference import reference_errors, wasserstein_unconstrained
from pyro_nf.comparison.report import interpret, markdown_table
from pyro_nf.evaluation.diagnostics import verdict
from pyro_nf.examples import get_example

STEPS, DRAWS, IS_DRAWS = 60, 300, 400
BASE_COLUMNS = [
    "elbo",
    "iwelbo",
    "khat",
    "verdict",
    "ess",
    "fit_seconds",
    "ms_per_step",
    "num_params",
    "num_steps",
    "stop_reason",
]
REF_COLUMNS = [
    "mean_error_max",
    "mean_error_median",
    "sd_ratio_worst",
    "sd_ratio_median",
    "iqr_ratio_worst",
    "iqr_ratio_median",
    "w1_unconstrained",
]


def _small(**kwargs: object) -> dict:
    return {
        "fit_kwargs": {"num_steps": STEPS},
        "num_samples": DRAWS,
        "diagnose_samples": IS_DRAWS,
        "progress": False,
        **kwargs,
    }


@pytest.fixture(scope="module")
def funnel_cmp() -> Comparison:
    """All five default guides on the funnel, against its shipped (exact) reference."""
    ex = get_example("funnel")
    return compare(ex.model, reference=Reference.from_example(ex), model_name="funnel", **_small(), **ex.data)


def test_table_has_one_row_per_guide_and_sane_values(funnel_cmp: Comparison) -> None:
    t = funnel_cmp.table
    assert list(t.index) == list(DEFAULT_GUIDES) and t.index.name == "guide"
    assert list(t.columns) == BASE_COLUMNS + REF_COLUMNS
    assert (t["num_steps"] == STEPS).all() and (t["stop_reason"] == "completed").all()
    assert np.isfinite(t["khat"]).all()
    assert (t["iwelbo"] >= t["elbo"]).all()  # log-mean-exp >= mean, on the same draws
    assert ((t["ess"] >= 1) & (t["ess"] <= IS_DRAWS)).all()
    assert (t["fit_seconds"] > 0).all()
    assert np.allclose(t["ms_per_step"], 1000 * t["fit_seconds"] / STEPS)
    assert t.loc["meanfield", "num_params"] == 20  # loc + scale for each of 10 coordinates
    assert (t.drop(index="meanfield")["num_params"] > 20).all()
    assert list(t["verdict"]) == [verdict(k).split(":")[0] for k in t["khat"]]


def test_reference_columns_are_consistent(funnel_cmp: Comparison) -> None:
    t = funnel_cmp.table
    assert (t["mean_error_max"] >= t["mean_error_median"]).all()
    assert (t["mean_error_median"] >= 0).all()
    for kind in ("sd_ratio", "iqr_ratio"):
        worst, med = np.log(t[f"{kind}_worst"]).abs(), np.log(t[f"{kind}_median"]).abs()
        assert (worst >= med - 1e-12).all()
    assert (t["w1_unconstrained"] > 0).all()
    # the funnel's x_i have heavy tails (sd 9.5): after a short fit mean-field is far too narrow
    assert t.loc["meanfield", "sd_ratio_median"] < 0.7
    err = funnel_cmp.errors
    assert list(err.columns) == ["guide", "parameter", "mean_error", "sd_ratio", "iqr_ratio"]
    assert len(err) == 10 * len(DEFAULT_GUIDES)
    assert set(err["parameter"]) == {"log_scale", *(f"x[{i}]" for i in range(9))}
    mf = err[err["guide"] == "meanfield"]
    assert t.loc["meanfield", "mean_error_max"] == pytest.approx(mf["mean_error"].max())


def test_idata_and_fits_per_guide(funnel_cmp: Comparison) -> None:
    assert set(funnel_cmp.idata) == set(funnel_cmp.fits) == set(DEFAULT_GUIDES)
    for name, idata in funnel_cmp.idata.items():
        assert idata.posterior.sizes["draw"] == DRAWS
        assert len(funnel_cmp.fits[name].losses) == STEPS


def test_save_writes_files_and_real_images(funnel_cmp: Comparison, tmp_path: Path) -> None:
    report = funnel_cmp.save(tmp_path / "out")
    out = report.parent
    table = pd.read_csv(out / "table.csv", index_col="guide")
    assert list(table.index) == list(DEFAULT_GUIDES)
    assert table["khat"].to_numpy() == pytest.approx(funnel_cmp.table["khat"].to_numpy())
    for name in DEFAULT_GUIDES:
        back = az.from_netcdf(out / f"{name}.nc")
        assert back.posterior["x"].shape == (1, DRAWS, 9)
    n = len(DEFAULT_GUIDES)
    expected = {
        "elbo.png": (plots.ELBO_FIGSIZE[1] * plots.DPI, plots.ELBO_FIGSIZE[0] * plots.DPI),
        "khat.png": (350, int(max(4.0, 1.2 * n) * plots.DPI)),
        "pair.png": (int(plots.PAIR_PANEL[1] * n * plots.DPI), int(plots.PAIR_PANEL[0] * 3 * 100)),
    }
    for name, shape in expected.items():
        image = mpimg.imread(out / name)
        assert image.shape[:2] == shape, name
        assert image[..., :3].std() > 0.05, f"{name} is blank"
    forest = mpimg.imread(out / "forest.png")
    assert forest.shape[1] == 800 and forest.shape[0] >= 400 and forest[..., :3].std() > 0.05
    text = report.read_text()
    assert markdown_table(funnel_cmp.table) in text
    for name in ("elbo.png", "pair.png", "forest.png", "khat.png"):
        assert f"]({name})" in text
    assert "meanfield's k-hat" in text and "Verdict:" in text


def test_every_kind_of_reference_is_accepted() -> None:
    ex = get_example("banana")
    kinds = {
        "example": ex,
        "summary": ex.reference,
        "sampler": ex.exact_sampler,
        "draws": ex.exact_sampler(2000, 1),
        "idata": az.from_dict(
            posterior={k: np.asarray(v)[None] for k, v in ex.exact_sampler(2000, 2).items()}
        ),
    }
    for kind, ref in kinds.items():
        cmp = compare(ex.model, guides=["meanfield"], reference=ref, **_small(), **ex.data)
        row = cmp.table.loc["meanfield"]
        assert np.isfinite(row["sd_ratio_worst"]), kind
        assert math.isnan(row["w1_unconstrained"]) == (kind == "summary"), kind
    with pytest.raises(TypeError, match="cannot use a int as a reference"):
        compare(ex.model, guides=["meanfield"], reference=3, **_small(), **ex.data)
    with pytest.raises(ValueError, match="must be 'nuts'"):
        compare(ex.model, guides=["meanfield"], reference="hmc", **_small(), **ex.data)


def _conjugate(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_nuts_reference_on_a_tiny_model() -> None:
    y = torch.tensor([0.5, 1.5, 1.0])  # posterior N(3/4, sd 1/2)
    ref = Reference.from_nuts(_conjugate, y, num_warmup=100, num_samples=300, seed=1)
    assert ref.draws["mu"].shape == (300,)
    assert float(ref.summary["mu"]["mean"]) == pytest.approx(0.75, abs=0.15)
    assert float(ref.summary["mu"]["sd"]) == pytest.approx(0.5, abs=0.12)
    assert "NUTS" in ref.source
    cmp = compare(_conjugate, y, guides=["meanfield"], reference=ref, **_small())
    assert np.isfinite(cmp.table.loc["meanfield", "w1_unconstrained"])


def test_bad_guide_names_fail_before_fitting() -> None:
    ex = get_example("banana")
    with pytest.raises(ValueError, match="unknown guide.*'nope'.*known: meanfield"):
        compare(ex.model, guides=["meanfield", "nope"], **_small(), **ex.data)
    with pytest.raises(ValueError, match="not being compared"):
        compare(ex.model, guides=["meanfield"], guide_kwargs={"iaf": {}}, **_small(), **ex.data)


def test_guide_kwargs_reach_the_guide() -> None:
    ex = get_example("banana")
    small = compare(
        ex.model, guides=["planar"], guide_kwargs={"planar": {"num_flows": 1}}, **_small(), **ex.data
    )
    big = compare(
        ex.model, guides=["planar"], guide_kwargs={"planar": {"num_flows": 4}}, **_small(), **ex.data
    )
    assert big.table.loc["planar", "num_params"] > small.table.loc["planar", "num_params"]


def test_reference_errors_on_known_draws() -> None:
    rng = np.random.default_rng(0)
    idata = az.from_dict(
        posterior={"mu": rng.normal(size=(1, 20_000)), "v": rng.normal(1.0, 3.0, size=(1, 20_000, 2))}
    )
    ref = Reference.from_summary(
        {
            "mu": {"mean": 0.0, "sd": 2.0, "q25": -1.349, "q75": 1.349},
            "v": {"mean": [1.0, -2.0], "sd": [3.0, 3.0]},
        }
    )
    err = reference_errors(idata, ref).set_index("parameter")
    assert list(err.index) == ["mu", "v[0]", "v[1]"]
    assert err.loc["mu", "sd_ratio"] == pytest.approx(0.5, abs=0.02)
    assert err.loc["mu", "iqr_ratio"] == pytest.approx(0.5, abs=0.02)
    assert err.loc["v[0]", "mean_error"] == pytest.approx(0.0, abs=0.05)
    assert err.loc["v[1]", "mean_error"] == pytest.approx(1.0, abs=0.05)
    assert math.isnan(err.loc["v[0]", "iqr_ratio"])


def test_wasserstein_is_measured_on_the_unconstrained_scale() -> None:
    rng = np.random.default_rng(0)
    idata = az.from_dict(posterior={"s": np.exp(rng.normal(size=(1, 5000)))})
    ref = Reference.from_draws({"s": np.exp(rng.normal(0.5, 1.0, size=5000))})
    assert wasserstein_unconstrained(idata, ref, {"s": constraints.positive}) == pytest.approx(0.5, abs=0.06)
    assert math.isnan(
        wasserstein_unconstrained(
            idata, Reference.from_summary({"s": {"mean": 1.0, "sd": 1.0}}), {"s": constraints.positive}
        )
    )


def _table(khat_mf: float, khat_iaf: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "khat": [khat_mf, khat_iaf],
            "iwelbo": [-40.0, -39.5],
            "ms_per_step": [1.0, 3.0],
            "num_params": [20, 900],
            "w1_unconstrained": [0.4, 0.1],
        },
        index=pd.Index(["meanfield", "iaf"], name="guide"),
    )


def test_interpretation_follows_the_numbers() -> None:
    errors = pd.DataFrame(
        {
            "guide": ["meanfield", "meanfield", "iaf", "iaf"],
            "parameter": ["mu", "tau", "mu", "tau"],
            "sd_ratio": [0.9, 0.35, 1.0, 0.88],
        }
    )
    text = interpret(_table(0.93, 0.45), errors)
    assert 3 <= len(text) <= 6
    assert text[0].startswith("meanfield's k-hat 0.93 > 0.7")
    assert "iaf, reduces it to 0.45 (+0.50 nats" in text[1]
    assert "hardest marginal for meanfield is tau: its sd is 0.35x" in text[2]
    assert "iaf's is 0.88x (12% off)" in text[2]
    assert "Verdict: a flow is worth it for this model (iaf)." == text[-1]
    three = pd.concat(
        [
            _table(0.93, 0.45),
            pd.DataFrame(
                {
                    "khat": [0.6],
                    "iwelbo": [-39.0],
                    "ms_per_step": [2.0],
                    "num_params": [50],
                    "w1_unconstrained": [0.2],
                },
                index=pd.Index(["planar"], name="guide"),
            ),
        ]
    )
    errors3 = pd.concat(
        [errors, pd.DataFrame({"guide": ["planar"], "parameter": ["tau"], "sd_ratio": [0.97]})]
    )
    assert "closest is planar's, 0.97x (3% off)" in interpret(three, errors3)[2]
    good = interpret(_table(0.3, 0.28))
    assert good[0].startswith("meanfield's k-hat 0.30 < 0.5") and "good enough" in good[-1]
    hopeless = interpret(_table(0.95, 0.9))
    assert "no guide tried is reliable" in hopeless[-1]


def test_plots_on_synthetic_draws() -> None:
    rng = np.random.default_rng(0)
    idata = {
        g: az.from_dict(
            posterior={
                "theta": rng.normal(size=(1, 200, 3)),
                "tau": np.exp(3 * rng.normal(size=(1, 200))),
                "mu": rng.normal(size=(1, 200)),
            }
        )
        for g in ("meanfield", "iaf")
    }
    coords = plots.pair_coordinates(idata)
    assert coords == [("tau", ()), ("mu", ()), ("theta", (0,))]
    fig = plots.plot_pair(idata, {"tau": np.exp(rng.normal(size=500)), "mu": rng.normal(size=500)})
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3
    assert fig.axes[0].get_xscale() == "log"  # tau spans many decades
    assert plots.plot_pair(idata, None, var_names=["mu"]).axes[0].get_xlabel() == "mu"
    with pytest.raises(ValueError, match="no variable"):
        plots.pair_coordinates(idata, ["nope"])
    forest = plots.plot_forest(idata, None, ["mu", "theta"])
    assert isinstance(forest, Figure)
    khat = plots.plot_khat(_table(0.93, 0.45))
    assert [t.get_text() for t in khat.axes[0].get_xticklabels()] == ["meanfield", "iaf"]
