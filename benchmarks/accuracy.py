"""Accuracy of the guides at their defaults on every built-in example, against Pyro's AutoIAFNormal.

    python benchmarks/accuracy.py [--guides maf planar] [--examples funnel banana] [--seed 0]
                                  [--time-budget 60] [--quick] [--out table.csv]

(from a checkout whose pyro_nf is not the installed one: ``PYTHONPATH=. python benchmarks/accuracy.py``).
A full run on the four small examples takes about 8 minutes on a busy 2-core machine; ``--quick``
(25 steps, 10^3 draws) is the smoke run of ``tests/comparison/test_accuracy_benchmark.py``.

For every example of :func:`pyro_nf.examples.available_examples` (or ``--examples``) and every guide
(``RECOMMENDED``, ``meanfield``, ``fullrank`` and any ``--guides``) the guide is built with
:func:`pyro_nf.make_guide` and fitted with ``pyro_nf.fit(model, guide, seed=..., progress=False,
**data)``: no other option, so the table measures the defaults (``--time-budget`` is passed as
``time_budget=`` only if ``fit`` has that parameter; ``--quick`` sets ``num_steps``).

Baseline row ``pyro_iafnormal``: Pyro's ``AutoIAFNormal(model)`` at its defaults, ``Trace_ELBO`` (one
particle), ``ClippedAdam(lr=5e-3)`` as in Pyro's tutorials, ``svi.step`` repeated until it has used the
wall time the recommended flow's fit took on that example. Column ``w1_vs_pyro`` is each row's W1
over the baseline's.

Per example x guide: ``khat`` (:func:`pyro_nf.diagnose`, 10^4 draws), and from 10^4 guide draws
(:func:`pyro_nf.to_inference_data`) against the example's reference
(:meth:`pyro_nf.Reference.from_example`: shipped draws, or 10^4 exact draws):

- ``scale == "unconstrained"``: guide and reference draws mapped to the unconstrained scale with
  ``biject_to(support).inv`` of each latent site; for sites whose support is the real line the
  shipped summaries (exact, or from the full reference run) replace the draws' summaries. Metrics
  from :func:`pyro_nf.comparison.reference.reference_errors` per element: ``sd_min``/``sd_med``
  (min/median sd ratio), ``iqr_min``/``iqr_med`` (IQR ratio), ``mean_err_max``
  (max ``|mean_q - mean_ref| / sd_ref``); ``w1``:
  :func:`~pyro_nf.comparison.reference.wasserstein_unconstrained` (mean 1-D W1 over coordinates).
- ``scale == "constrained-summary"`` (examples with summaries only, e.g. german_credit, radon): the
  same ratios on the constrained scale against the shipped means and sds (no IQR, no W1).

Funnel columns: ``ls_sd`` and ``ls_iqr`` (log-scale's sd and IQR ratio to exact), ``x_iqr_med``
(median IQR ratio of the x coordinates; their sample sd is noise).

Deterministic sites are left out of the draws (metrics are on latent sites): ``to_inference_data``
fails on a ``pyro.deterministic`` inside a plate (eight_schools_noncentered's ``theta``).
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal
from pyro.optim import ClippedAdam
from torch.distributions import biject_to, constraints

import pyro_nf
from pyro_nf.comparison.reference import (
    Reference,
    latent_supports,
    reference_errors,
    wasserstein_unconstrained,
)
from pyro_nf.examples import Example, available_examples, get_example
from pyro_nf.guides.registry import GUIDES

#: The flow guide the README recommends (``pyro_nf.RECOMMENDED_GUIDE``).
RECOMMENDED = pyro_nf.RECOMMENDED_GUIDE
#: Guides always run: the recommended flow first (its wall time sets the baseline's), then the
#: Gaussian baselines.
BASE_GUIDES = (RECOMMENDED, "meanfield", "fullrank")
BASELINE = "pyro_iafnormal"
QUICK_EXAMPLES = ("funnel", "eight_schools_noncentered")
QUICK_GUIDES = (RECOMMENDED, "meanfield")
QUICK_STEPS = 25
NUM_DRAWS = 10_000
QUICK_DRAWS = 1000
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


def _names(values: Sequence[str] | None) -> list[str]:
    """Accept both ``--x a b`` and ``--x a,b``."""
    return [n for v in values or () for n in v.split(",") if n]


def _without_deterministic(model: Callable) -> Callable:
    return poutine.block(model, hide_fn=lambda msg: bool(msg.get("infer", {}).get("_deterministic")))


def _pooled(idata: az.InferenceData, site: str) -> np.ndarray:
    da = idata.posterior[site].transpose("chain", "draw", ...)
    values = np.asarray(da.values, dtype=float)
    return values.reshape(-1, *values.shape[2:])


def _unconstrain(x: np.ndarray, support: Any) -> np.ndarray:
    with torch.no_grad():
        return biject_to(support).inv(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _is_real(support: Any) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def unconstrained_view(
    idata: az.InferenceData, ref: Reference, ex: Example, supports: dict[str, Any]
) -> tuple[az.InferenceData, Reference]:
    """Guide draws and reference on the unconstrained scale of the latent sites both have."""
    sites = [s for s in ref.draws if s in supports and s in idata.posterior.data_vars]
    guide_u = {s: _unconstrain(_pooled(idata, s), supports[s])[None] for s in sites}
    ref_u = Reference.from_draws(
        {s: _unconstrain(np.asarray(ref.draws[s], dtype=float), supports[s]) for s in sites}
    )
    for s in sites:
        if _is_real(supports[s]) and s in ex.reference:
            ref_u.summary[s] = {**ref_u.summary[s], **ex.reference[s]}
    return az.from_dict(posterior=guide_u), ref_u


def score(
    ex: Example, guide: Any, ref: Reference, supports: dict[str, Any], seed: int, draws: int
) -> dict[str, Any]:
    """k-hat and the reference metrics of a fitted guide (any guide)."""
    pyro.set_rng_seed(seed)
    diag = pyro_nf.diagnose(ex.model, guide, num_samples=draws, **ex.data)
    pyro.set_rng_seed(seed)
    idata = pyro_nf.to_inference_data(_without_deterministic(ex.model), guide, num_samples=draws, **ex.data)
    row: dict[str, Any] = {"khat": float(diag.khat)}
    if ref.draws is not None:
        idata_u, ref_u = unconstrained_view(idata, ref, ex, supports)
        errors = reference_errors(idata_u, ref_u)
        row["scale"] = "unconstrained"
        row["w1"] = wasserstein_unconstrained(idata, ref, supports)
    else:
        errors = reference_errors(idata, ref)
        row["scale"] = "constrained-summary"
        row["w1"] = math.nan
    row.update(
        sd_min=errors["sd_ratio"].min(),
        sd_med=errors["sd_ratio"].median(),
        iqr_min=errors["iqr_ratio"].min(),
        iqr_med=errors["iqr_ratio"].median(),
        mean_err_max=errors["mean_error"].max(),
    )
    if ex.name == "funnel":
        by = errors.set_index("parameter")
        row["ls_sd"] = by.loc["log_scale", "sd_ratio"]
        row["ls_iqr"] = by.loc["log_scale", "iqr_ratio"]
        row["x_iqr_med"] = by.loc[by.index.str.startswith("x["), "iqr_ratio"].median()
    return row


def fit_options(args: argparse.Namespace) -> dict[str, Any]:
    """What every pyro_nf fit gets besides ``seed`` and ``progress=False``."""
    opts: dict[str, Any] = {}
    if args.quick:
        opts["num_steps"] = QUICK_STEPS
    if args.time_budget is not None and "time_budget" in inspect.signature(pyro_nf.fit).parameters:
        opts["time_budget"] = args.time_budget
    return opts


def run_pyro_baseline(ex: Example, seconds: float, seed: int) -> tuple[Any, float, int]:
    """Pyro's AutoIAFNormal, Trace_ELBO, ClippedAdam(5e-3), stepped until ``seconds`` have passed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = AutoIAFNormal(ex.model)
    svi = SVI(ex.model, guide, ClippedAdam({"lr": 5e-3}), Trace_ELBO())
    start, steps = time.perf_counter(), 0
    while steps == 0 or time.perf_counter() - start < seconds:
        svi.step(**ex.data)
        steps += 1
    return guide, time.perf_counter() - start, steps


def run_example(name: str, guides: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    ex = get_example(name)
    draws = QUICK_DRAWS if args.quick else NUM_DRAWS
    ref = Reference.from_example(ex, num_samples=draws, seed=args.seed)
    supports = latent_supports(ex.model, **ex.data)
    opts = fit_options(args)
    rows, budget = [], None
    for g in guides:
        row: dict[str, Any] = {"example": name, "guide": g, "status": "ok"}
        try:
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            guide = pyro_nf.make_guide(g, ex.model)
            result = pyro_nf.fit(ex.model, guide, seed=args.seed, progress=False, **opts, **ex.data)
            row.update(fit_s=result.wall_seconds, steps=result.num_steps)
            if g == RECOMMENDED:
                budget = result.wall_seconds
            row.update(score(ex, guide, ref, supports, args.seed, draws))
        except Exception as err:  # a failed fit is a row of the table, not the end of the run
            row["status"] = type(err).__name__
            print(f"{name} / {g}: {type(err).__name__}: {err}", file=sys.stderr)
        rows.append(row)
        print(f"  done {name} / {g}", file=sys.stderr, flush=True)
    row = {"example": name, "guide": BASELINE, "status": "ok" if budget else "no-budget"}
    try:
        guide, seconds, steps = run_pyro_baseline(ex, budget or 0.0, args.seed)
        row.update(fit_s=seconds, steps=steps)
        row.update(score(ex, guide, ref, supports, args.seed, draws))
    except Exception as err:
        row["status"] = type(err).__name__
        print(f"{name} / {BASELINE}: {type(err).__name__}: {err}", file=sys.stderr)
    rows.append(row)
    pyro_w1 = row.get("w1", math.nan)
    for r in rows:
        r["w1_vs_pyro"] = r.get("w1", math.nan) / pyro_w1 if pyro_w1 and pyro_w1 > 0 else math.nan
    return rows


def summary(table: pd.DataFrame) -> list[str]:
    """The three acceptance counts of issue 11 for the recommended flow."""
    by = table.set_index(["example", "guide"])
    examples = list(dict.fromkeys(table["example"]))
    rec = by.xs(RECOMMENDED, level="guide")
    good_k = [e for e in examples if rec.loc[e, "khat"] < 0.7]
    good_sd = [e for e in examples if 0.9 <= rec.loc[e, "sd_med"] <= 1.1]
    n = len(examples)
    lines = [
        f"{RECOMMENDED}: k-hat < 0.7 on {len(good_k)}/{n} posteriors ({', '.join(good_k) or '-'})",
        f"{RECOMMENDED}: median sd ratio in [0.9, 1.1] on {len(good_sd)}/{n} posteriors "
        f"({', '.join(good_sd) or '-'}; unconstrained scale, constrained where the reference is a summary)",
    ]
    if "meanfield" in table["guide"].values:
        mf = by.xs("meanfield", level="guide")
        hard = [e for e in examples if mf.loc[e, "khat"] > 0.7]
        scored = [e for e in hard if np.isfinite(by.loc[(e, BASELINE), "w1"])]
        won = [e for e in scored if rec.loc[e, "w1"] < by.loc[(e, BASELINE), "w1"]]
        no_draws = [e for e in hard if by.loc[(e, RECOMMENDED), "scale"] == "constrained-summary"]
        no_baseline = [e for e in hard if e not in scored and e not in no_draws]
        lines.append(
            f"{RECOMMENDED}: lower W1 than {BASELINE} (same wall time) on {len(won)}/{len(scored)} "
            f"posteriors where meanfield's k-hat > 0.7 ({', '.join(won) or '-'}; meanfield k-hat > 0.7 on "
            f"{', '.join(hard) or 'none'}; without reference draws: {', '.join(no_draws) or 'none'}; "
            f"no {BASELINE} W1: {', '.join(no_baseline) or 'none'})"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guides", nargs="*", default=[], help="more guides (registry names)")
    parser.add_argument("--examples", nargs="*", default=None, help="fewer examples (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per guide, if fit takes it")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EXAMPLES}, 2 guides, few steps")
    parser.add_argument("--out", default=None, help="also write the table as CSV here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)

    guides = list(QUICK_GUIDES if args.quick else BASE_GUIDES)
    guides += [g for g in _names(args.guides) if g not in guides]
    GUIDES.check(guides)
    examples = _names(args.examples) or list(QUICK_EXAMPLES if args.quick else available_examples())
    unknown = [e for e in examples if e not in available_examples()]
    if unknown:
        parser.error(f"unknown example(s) {unknown}; known: {', '.join(available_examples())}")

    rows = []
    for name in examples:
        print(f"[{name}] {len(guides)} guides + {BASELINE}", file=sys.stderr, flush=True)
        rows += run_example(name, guides, args)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    print(
        f"accuracy at defaults: seed {args.seed}, fit options {fit_options(args) or 'none'}, "
        f"{QUICK_DRAWS if args.quick else NUM_DRAWS} draws, torch threads 1"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print()
    for line in summary(table):
        print(line)
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"table written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
