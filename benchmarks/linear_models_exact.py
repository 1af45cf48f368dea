"""Exact posterior moments of the three linear-Gaussian examples, against their reference summaries.

    python benchmarks/linear_models_exact.py

``kilpisjarvi``, ``sblrc_blr`` and ``arK`` are linear regressions ``y ~ N(Z theta, sigma)`` with
independent Normal priors on ``theta`` (``Z`` = ``[1, x]``, ``X`` and ``[1, lags]``), so given
``sigma`` the posterior of ``theta`` is Gaussian in closed form and ``p(sigma | y)`` is one-dimensional:

    p(sigma | y) ∝ p(sigma) N(y; Z m0, sigma^2 I + Z S0 Z^T),
    theta | sigma, y ~ N(m, V),  V = (S0^-1 + Z^T Z / sigma^2)^-1,  m = V (S0^-1 m0 + Z^T y / sigma^2).

The script evaluates ``p(sigma | y)`` on a fine grid in ``log sigma`` (trapezoid rule, ``float64``)
and mixes the conditional moments, giving the exact posterior mean and sd of every parameter of
the model *as pyro_nf writes it* (data and priors are read from the built example and its module).
It prints them beside the reference (Stan NUTS, 10,000 draws) with ``z = (exact - ref mean) / ref
MCSE`` and the sd ratio: a model that is the reference posterior has ``|z|`` of order 1 and sd ratios
within about 1%.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import logsumexp

from pyro_nf.examples import get_example
from pyro_nf.examples._data import load_json
from pyro_nf.examples._kilpisjarvi import ALPHA_PRIOR, BETA_PRIOR


def _log_half_cauchy(s: np.ndarray, scale: float) -> np.ndarray:
    return math.log(2 / (math.pi * scale)) - np.log1p((s / scale) ** 2)


def _log_half_normal(s: np.ndarray, scale: float) -> np.ndarray:
    return 0.5 * math.log(2 / math.pi) - math.log(scale) - 0.5 * (s / scale) ** 2


def _problems() -> dict:
    out = {}
    ex = get_example("kilpisjarvi")
    x, y = ex.data["x"].double().numpy(), ex.data["y"].double().numpy()
    out["kilpisjarvi"] = dict(
        Z=np.stack([np.ones_like(x), x], 1),
        y=y,
        m0=np.array([ALPHA_PRIOR[0], BETA_PRIOR[0]]),
        s0=np.array([ALPHA_PRIOR[1], BETA_PRIOR[1]]),
        log_prior=lambda s: np.zeros_like(s),
        names=[("alpha", None), ("beta", None)],
        file="kilpisjarvi.json",
    )
    ex = get_example("sblrc_blr")
    X, y = ex.data["X"].double().numpy(), ex.data["y"].double().numpy()
    out["sblrc_blr"] = dict(
        Z=X,
        y=y,
        m0=np.zeros(5),
        s0=np.full(5, 10.0),
        log_prior=lambda s: _log_half_normal(s, 10.0),
        names=[("beta", i) for i in range(5)],
        file="sblrc_blr.json",
    )
    ex = get_example("arK")
    lags, y = ex.data["lags"].double().numpy(), ex.data["y"].double().numpy()
    out["arK"] = dict(
        Z=np.concatenate([np.ones((len(y), 1)), lags], 1),
        y=y,
        m0=np.zeros(6),
        s0=np.full(6, 10.0),
        log_prior=lambda s: _log_half_cauchy(s, 2.5),
        names=[("alpha", None)] + [("beta", i) for i in range(5)],
        file="arK.json",
    )
    return out


def exact_moments(Z, y, m0, s0, log_prior, sigma_grid):
    """Posterior mean and sd of ``(theta, sigma)`` by quadrature over ``sigma_grid`` (log-spaced)."""
    Zt = Z * s0  # theta = m0 + s0 * t, t ~ N(0, I)
    r = y - Z @ m0
    n = len(y)
    ZtZ, Ztr, rr = Zt.T @ Zt, Zt.T @ r, r @ r
    log_w, means, second = [], [], []
    eye = np.eye(Z.shape[1])
    for s in sigma_grid:
        precision = eye + ZtZ / s**2
        chol = np.linalg.cholesky(precision)
        b = Ztr / s**2
        mean_t = np.linalg.solve(precision, b)
        log_det_p = 2 * np.log(np.diag(chol)).sum()
        log_lik = -0.5 * (
            n * math.log(2 * math.pi) + 2 * n * math.log(s) + log_det_p + rr / s**2 - b @ mean_t
        )
        cov_t = np.linalg.inv(precision)
        log_w.append(log_lik + log_prior(np.asarray(s)) + math.log(s))  # + log s: grid in log sigma
        means.append(m0 + s0 * mean_t)
        second.append(np.outer(s0, s0) * cov_t + np.outer(means[-1], means[-1]))
    log_w = np.asarray(log_w)
    w = np.exp(log_w - logsumexp(log_w))
    w[0] *= 0.5
    w[-1] *= 0.5
    w /= w.sum()
    mean = np.einsum("g,gi->i", w, np.asarray(means))
    var = np.einsum("g,gii->i", w, np.asarray(second)) - mean**2
    s_mean = (w * sigma_grid).sum()
    s_sd = math.sqrt((w * sigma_grid**2).sum() - s_mean**2)
    return mean, np.sqrt(var), s_mean, s_sd, w[[0, -1]].max()


def main() -> None:
    torch.set_num_threads(1)
    for name, p in _problems().items():
        ref = load_json(p["file"])["reference"]
        s_ref = ref["sigma"]
        grid = np.exp(
            np.linspace(
                math.log(s_ref["mean"]) - 12 * s_ref["sd"] / s_ref["mean"],
                math.log(s_ref["mean"]) + 12 * s_ref["sd"] / s_ref["mean"],
                4001,
            )
        )
        mean, sd, s_mean, s_sd, edge = exact_moments(p["Z"], p["y"], p["m0"], p["s0"], p["log_prior"], grid)
        print(f"\n{name} (grid edge weight {edge:.1e})")
        print(
            f"  {'parameter':10s} {'exact mean':>12s} {'ref mean':>12s} {'z (MCSE)':>9s} "
            f"{'exact sd':>10s} {'ref sd':>10s} {'sd ratio':>9s}"
        )
        rows = [
            (f"{k}" if i is None else f"{k}[{i}]", mean[j], sd[j], ref[k], i)
            for j, (k, i) in enumerate(p["names"])
        ] + [("sigma", s_mean, s_sd, s_ref, None)]
        for label, m, s, r, i in rows:
            rm, rs, mc = (
                (r["mean"], r["sd"], r["mcse_mean"])
                if i is None
                else (r["mean"][i], r["sd"][i], r["mcse_mean"][i])
            )
            print(
                f"  {label:10s} {m:12.6g} {rm:12.6g} {(m - rm) / mc:9.2f} {s:10.4g} {rs:10.4g} {s / rs:9.4f}"
            )


if __name__ == "__main__":
    main()
