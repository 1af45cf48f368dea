"""Marginal accuracy of a coupling guide on *families* of bananas and funnels, for tuning defaults.

Usage::

    python benchmarks/family_accuracy.py --guide nsf --steps 6000 \
        --examples banana:0.03 banana:0.06 funnel:10 funnel:6 --option num_bins=16 --option bound=10

``banana:b`` is :math:`x_0 \\sim N(0, 10)`, :math:`x_1 \\mid x_0 \\sim N(b(x_0^2 - 100), 1)` (exact sds
10 and :math:`\\sqrt{1 + 2 b^2 10^4}`); ``funnel:d`` is Neal's funnel in ``d`` dimensions
(:math:`z \\sim N(0, 3)`, :math:`x_i \\mid z \\sim N(0, e^{z/2})`, exact x IQRs from 2 million exact
draws). Every fit is :func:`pyro_nf.fit` at its default recipe (16 particles, lr 0.01 decayed to 0.1x,
STL from half-way, Laplace start) except ``--steps``; one thread, seed 0, 20,000 guide draws. Prints
one line per (example, options): the ratios guide / exact that ``benchmarks/accuracy.py`` reports
(banana: min and median sd ratio; funnel: log-scale sd and IQR ratio, median x-IQR ratio), the fit's
wall time, last loss and how many steps the gradient clip rescaled.
"""

from __future__ import annotations

import argparse
import ast
import math
import time
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_nf import fit, make_guide

NUM_DRAWS = 20_000


def make_banana(b: float):
    def banana() -> None:
        x0 = pyro.sample("x0", dist.Normal(0.0, 10.0))
        pyro.sample("x1", dist.Normal(b * (x0**2 - 100.0), 1.0))

    return banana


def make_funnel(d: int):
    def funnel() -> None:
        z = pyro.sample("log_scale", dist.Normal(0.0, 3.0))
        with pyro.plate("dims", d - 1):
            pyro.sample("x", dist.Normal(0.0, torch.exp(z / 2)))

    return funnel


def _iqr(a: np.ndarray, axis: int = 0) -> np.ndarray:
    q75, q25 = np.percentile(a, [75, 25], axis=axis)
    return q75 - q25


def exact_funnel_x_iqr() -> float:
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 3.0, 2_000_000)
    return float(_iqr(rng.normal(0.0, 1.0, z.shape) * np.exp(z / 2)))


def run(
    spec: str, guide_name: str, options: dict[str, Any], steps: int, seed: int, fit_options: dict[str, Any]
) -> dict[str, Any]:
    kind, _, arg = spec.partition(":")
    model = make_banana(float(arg or 0.03)) if kind == "banana" else make_funnel(int(arg or 10))
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(guide_name, model, **options)
    start = time.perf_counter()
    result = fit(model, guide, num_steps=steps, seed=seed, progress=False, **fit_options)
    seconds = time.perf_counter() - start
    pyro.set_rng_seed(seed + 1)
    with torch.no_grad():
        draws = pyro.infer.Predictive(model, guide=guide, num_samples=NUM_DRAWS, parallel=True)()
    d = {k: v.reshape(NUM_DRAWS, -1).double().numpy() for k, v in draws.items()}
    row: dict[str, Any] = {"example": spec, "seed": seed, "steps": result.num_steps, "fit_s": seconds}
    row["loss"] = float(np.mean(result.losses[-200:]))
    row["clipped"] = result.num_clipped
    if kind == "banana":
        b = float(arg or 0.03)
        ratios = [d["x0"].std() / 10.0, d["x1"].std() / math.sqrt(1 + 2 * b * b * 1e4)]
        row.update(sd_min=min(ratios), sd_med=float(np.median(ratios)), sd_x0=ratios[0], sd_x1=ratios[1])
    else:
        ls = d["log_scale"][:, 0]
        row["ls_sd"] = ls.std() / 3.0
        row["ls_iqr"] = float(_iqr(ls)) / (2 * 3.0 * 0.6744897501960817)
        row["x_iqr_med"] = float(np.median(_iqr(d["x"]))) / EXACT_X_IQR
    return row


EXACT_X_IQR = math.nan


def main() -> None:
    global EXACT_X_IQR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guide", default="nsf")
    parser.add_argument("--option", action="append", default=[], help="key=value (a Python literal)")
    parser.add_argument("--fit-option", action="append", default=[], help="key=value for fit() (not tuning)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", nargs="*", default=["banana:0.03", "funnel:10"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    options, fit_options = {}, {}
    for items, into in ((args.option, options), (args.fit_option, fit_options)):
        for item in items:
            key, _, value = item.partition("=")
            into[key] = ast.literal_eval(value)
    EXACT_X_IQR = exact_funnel_x_iqr()
    for spec in args.examples:
        row = run(spec, args.guide, options, args.steps, args.seed, fit_options)
        cells = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        print(f"{args.guide} {options} {fit_options or ''} {cells}", flush=True)


if __name__ == "__main__":
    main()
