"""Smoke run of ``benchmarks/accuracy.py --quick``: the table it prints has the rows, columns and numbers."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

import pyro_nf
from pyro_nf.comparison.reference import Reference, latent_supports, reference_errors
from pyro_nf.examples import get_example

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "accuracy.py"
COLUMNS = [
    "example",
    "guide",
    "scale",
    "status",
    "khat",
    "sd_min",
    "sd_med",
    "iqr_min",
    "iqr_med",
    "mean_err_max",
    "w1",
    "w1_vs_pyro",
    "fit_s",
    "steps",
    "ls_sd",
    "ls_iqr",
    "x_iqr_med",
]
NUMERIC = ["khat", "sd_min", "sd_med", "iqr_min", "iqr_med", "mean_err_max", "w1", "w1_vs_pyro", "fit_s"]


def _printed_table(stdout: str) -> tuple[list[str], list[list[str]]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["example", "guide"])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return header, rows


@pytest.mark.slow
def test_quick_run_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "table.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--seed", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = _printed_table(proc.stdout)
    assert header == COLUMNS
    assert all(len(r) == len(COLUMNS) for r in rows), rows
    printed = pd.DataFrame(rows, columns=COLUMNS)
    expected = {
        (e, g)
        for e in ("funnel", "eight_schools_noncentered")
        for g in (pyro_nf.RECOMMENDED_GUIDE, "meanfield", "pyro_iafnormal")
    }
    assert set(zip(printed["example"], printed["guide"], strict=True)) == expected
    assert len(printed) == len(expected)
    assert (printed["status"] == "ok").all()
    assert (printed["scale"] == "unconstrained").all()  # both quick examples ship reference draws
    for col in NUMERIC:
        values = printed[col].astype(float)
        assert values.map(math.isfinite).all(), (col, list(values))
    assert (printed["khat"].astype(float) > -1).all()
    assert (printed["w1"].astype(float) > 0).all()
    assert (printed.loc[printed["guide"] == "pyro_iafnormal", "w1_vs_pyro"].astype(float) == 1).all()
    funnel = printed[printed["example"] == "funnel"]
    for col in ("ls_sd", "ls_iqr", "x_iqr_med"):
        assert funnel[col].astype(float).map(math.isfinite).all(), col
        assert (funnel[col].astype(float) > 0).all(), col
    assert (printed.loc[printed["example"] != "funnel", "ls_sd"] == "NaN").all()
    assert f"{pyro_nf.RECOMMENDED_GUIDE}: k-hat < 0.7 on" in proc.stdout
    assert f"{pyro_nf.RECOMMENDED_GUIDE}: median sd ratio in [0.9, 1.1] on" in proc.stdout
    assert "lower W1 than pyro_iafnormal" in proc.stdout

    saved = pd.read_csv(out)
    assert list(saved.columns) == COLUMNS
    assert list(zip(saved["example"], saved["guide"], strict=True)) == list(
        zip(printed["example"], printed["guide"], strict=True)
    )
    for col in NUMERIC:
        assert saved[col].to_numpy() == pytest.approx(
            printed[col].astype(float).to_numpy(), rel=6e-3
        )  # printed to 3 significant figures


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["banana", "eight_schools_centered"])
def test_unconstrained_metrics_of_reference_like_draws(name: str) -> None:
    """Exact (or reference) draws score ratios near 1; the same draws shrunk by half score 0.5."""
    acc = _benchmark_module()
    ex = get_example(name)
    ref = Reference.from_example(ex, num_samples=4000, seed=0)
    supports = latent_supports(ex.model, **ex.data)
    if ex.exact_sampler is not None:
        draws = {k: v.double().numpy() for k, v in ex.exact_sampler(4000, 1).items()}
    else:
        draws = {k: np.asarray(v, dtype=float) for k, v in ex.reference_draws.items()}
    good, ref_u = acc.unconstrained_view(
        az.from_dict(posterior={k: v[None] for k, v in draws.items()}), ref, ex, supports
    )
    errors = reference_errors(good, ref_u)
    assert errors["sd_ratio"].median() == pytest.approx(1.0, abs=0.06)
    assert errors["iqr_ratio"].median() == pytest.approx(1.0, abs=0.06)
    assert errors["mean_error"].max() < 0.1
    shrunk = {}
    for site, x in good.posterior.items():  # halve the spread on the unconstrained scale
        v = np.asarray(x.values)
        shrunk[site] = v.mean(axis=1, keepdims=True) + 0.5 * (v - v.mean(axis=1, keepdims=True))
    errors = reference_errors(az.from_dict(posterior=shrunk), ref_u)
    assert errors["sd_ratio"].median() == pytest.approx(0.5, abs=0.04)
    assert errors["iqr_ratio"].median() == pytest.approx(0.5, abs=0.04)
