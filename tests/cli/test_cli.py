"""The ``pyro-nf`` command end to end: list, fit, compare; user models and data; every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import arviz as az
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from pyro_nf.cli.command import main
from pyro_nf.comparison.plots import DPI, ELBO_FIGSIZE

SMALL = ["--steps", "40", "--num-samples", "200", "--diagnose-samples", "200", "--quiet"]

USER_MODELS = """
import pyro
import pyro.distributions as dist
import torch

def regression(x, y=None):
    alpha = pyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("obs", x.shape[0]):
        pyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)

def not_a_model(x, y=None):
    return x * 2

def breaks_on_data(x, y=None):
    pyro.sample("a", dist.Normal(0.0, 1.0))
    return x @ torch.ones(7, 7)

CALLS = []

def breaks_later(x, y=None):
    CALLS.append(1)
    if len(CALLS) > 20:  # fine while being checked and set up, fails in the middle of the fit
        raise RuntimeError("boom")
    pyro.sample("a", dist.Normal(0.0, 1.0))

NOT_CALLABLE = 3
"""


@pytest.fixture
def user(tmp_path: Path) -> dict[str, Path]:
    """A user's model file, a CSV and an npz of data for ``regression``."""
    models = tmp_path / "my_models.py"
    models.write_text(USER_MODELS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 1.0 + 2.0 * x + rng.normal(scale=0.5, size=30)
    csv = tmp_path / "data.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(csv, index=False)
    npz = tmp_path / "data.npz"
    np.savez(npz, x=x, y=y)
    return {"models": models, "csv": csv, "npz": npz, "dir": tmp_path}


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _png_shape(path: Path) -> tuple[int, int]:
    return mpimg.imread(path).shape[:2]


def test_list_names_guides_and_examples(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("meanfield", "fullrank", "planar", "iaf", "maf", "funnel", "eight_schools_centered"):
        assert name in out


def test_fit_builtin_writes_draws_plot_and_diagnostics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fit"
    assert main(["fit", "banana", "--guide", "meanfield", "--out", str(out), *SMALL]) == 0
    assert "k-hat" in capsys.readouterr().out
    idata = az.from_netcdf(out / "meanfield.nc")
    assert idata.posterior.sizes["draw"] == 200
    assert _png_shape(out / "loss.png") == (ELBO_FIGSIZE[1] * DPI, ELBO_FIGSIZE[0] * DPI)
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["guide"] == "meanfield" and diag["num_steps"] == 40 and diag["num_draws"] == 200
    assert np.isfinite(diag["khat"]) and diag["iwelbo"] >= diag["elbo"]


def test_compare_builtin_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    assert main(["compare", "funnel", "--guides", "meanfield,iaf", "--out", str(out), *SMALL]) == 0
    assert "wrote" in capsys.readouterr().out
    table = pd.read_csv(out / "table.csv", index_col="guide")
    assert list(table.index) == ["meanfield", "iaf"]
    assert table["w1_unconstrained"].notna().all()  # the funnel's exact sampler gives draws
    for name in ("meanfield.nc", "iaf.nc", "elbo.png", "pair.png", "forest.png", "khat.png"):
        assert (out / name).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| meanfield |" in report and "![ELBO traces](elbo.png)" in report


@pytest.mark.parametrize("data", ["csv", "npz"])
def test_user_model_and_data_load(user: dict[str, Path], data: str, capsys: pytest.CaptureFixture) -> None:
    out = user["dir"] / f"out_{data}"
    spec = f"{user['models']}:regression"
    assert (
        main(
            [
                "compare",
                spec,
                "--data",
                str(user[data]),
                "--guides",
                "meanfield,fullrank",
                "--out",
                str(out),
                *SMALL,
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "table.csv", index_col="guide")
    assert "w1_unconstrained" not in table  # no reference for a user's model unless asked
    posterior = az.from_netcdf(out / "fullrank.nc").posterior
    assert set(posterior.data_vars) == {"alpha", "beta", "sigma"}
    assert float(posterior["sigma"].min()) > 0


def test_user_model_with_reference_file(user: dict[str, Path]) -> None:
    spec = f"{user['models']}:regression"
    first = user["dir"] / "first"
    assert (
        main(["fit", spec, "--data", str(user["csv"]), "--guide", "fullrank", "--out", str(first), *SMALL])
        == 0
    )
    out = user["dir"] / "second"
    assert (
        main(
            [
                "compare",
                spec,
                "--data",
                str(user["csv"]),
                "--guides",
                "meanfield",
                "--reference",
                str(first / "fullrank.nc"),
                "--out",
                str(out),
                *SMALL,
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "table.csv", index_col="guide")
    assert np.isfinite(table.loc["meanfield", "w1_unconstrained"])
    assert 0.2 < table.loc["meanfield", "sd_ratio_median"] < 5


def _bad_inputs(u: dict[str, Path]) -> list[tuple[list[str], str]]:
    m, csv, d = u["models"], str(u["csv"]), u["dir"]
    (d / "garbage.npz").write_bytes(b"this is not a zip file")
    (d / "text.csv").write_text("x,y\na,1\nb,2\n")
    (d / "extra.csv").write_text("x,y,z\n1,2,3\n")
    (d / "data.txt").write_text("1 2 3")
    np.savez(d / "nan.npz", x=np.zeros(3), y=np.array([1.0, np.nan, 2.0]))
    (d / "broken.py").write_text("def model(:\n")
    return [
        (["fit", "no_such_example"], "unknown model 'no_such_example'"),
        (["fit", f"{d}/missing.py:model"], "missing.py does not exist"),
        (["fit", f"{m}:nope", "--data", csv], "has no function 'nope'"),
        (["fit", f"{m}:NOT_CALLABLE", "--data", csv], "not a function"),
        (["fit", f"{m}:not_a_model", "--data", csv], "not a Pyro model"),
        (
            ["fit", f"{m}:breaks_on_data", "--data", csv],
            "calling my_models:breaks_on_data on the data failed: "
            "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x30 and 7x7)",
        ),
        (["fit", f"{d}/broken.py:model"], "syntax error on line 1"),
        (["fit", "banana", "--guide", "nosuch"], "unknown guide 'nosuch'; known: "),
        (["compare", "banana", "--guides", "meanfield,bogus"], "unknown guide 'bogus'"),
        (["fit", f"{m}:regression", "--data", f"{d}/nothing.csv"], "nothing.csv does not exist"),
        (["fit", f"{m}:regression", "--data", f"{d}/garbage.npz"], "cannot read data"),
        (["fit", f"{m}:regression", "--data", f"{d}/text.csv"], "column 'x' is not numeric"),
        (["fit", f"{m}:regression", "--data", f"{d}/data.txt"], "must be .csv or .npz"),
        (["fit", f"{m}:regression", "--data", f"{d}/extra.csv"], "unknown argument(s) z"),
        (["fit", f"{m}:regression"], "missing argument(s) x"),
        (["fit", f"{m}:regression", "--data", str(d / "nan.npz")], "data 'y' has 1 NaN value(s)"),
        (["compare", "banana", "--reference", f"{d}/ref.nc"], "--reference must be"),
        (["compare", "banana", "--vars", "x0,nope"], "no latent site(s) nope"),
        (["fit", "banana", "--steps", "0"], "expected a positive integer, got 0"),
        (["fit", "banana", "--steps", "many"], "expected a positive integer, got 'many'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: {list,fit,compare}"),
    ]


def test_every_bad_input_gives_one_line_and_status_2(
    user: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    for argv, message in _bad_inputs(user):
        code, err = _error(capsys, argv)
        assert code == 2, (argv, err)
        assert err.startswith("pyro-nf: error: ") and "\n" not in err, (argv, err)
        assert message in err, (argv, err)


def test_unexpected_failure_is_one_line_status_1(
    user: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    code, err = _error(capsys, ["fit", f"{user['models']}:breaks_later", "--data", str(user["csv"]), *SMALL])
    assert code == 1
    assert err.startswith("pyro-nf: error: unexpected RuntimeError: boom") and "\n" not in err


def test_subprocess_exit_code_and_no_traceback(user: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_nf.cli", "fit", f"{user['models']}:nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"pyro-nf: error: {user['models']} has no function 'nope' (functions: breaks_later, "
        "breaks_on_data, not_a_model, regression)"
    )


def test_help_exits_zero(capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "--help"]) == 0
    assert "--reference" in capsys.readouterr().out
