"""Acceptance run of issue #5: centered eight schools, the shipped reference, compare's defaults.

Prints the comparison table, each guide's tau sd against the reference, and whether the report shows
mean-field with k-hat > 0.7 and at least one flow with a lower k-hat and a tau sd closer to the
reference. Takes a few minutes on two CPU cores.

    python benchmarks/compare_eight_schools.py [--steps N] [--seed S] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import pandas as pd

from pyro_nf.comparison import DEFAULT_NUM_STEPS, Reference, compare
from pyro_nf.examples import get_example

FLOWS = ("planar", "iaf", "maf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_NUM_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also save the report folder here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)

    ex = get_example("eight_schools_centered")
    cmp = compare(
        ex.model,
        reference=Reference.from_example(ex),
        seed=args.seed,
        fit_kwargs={"num_steps": args.steps},
        model_name=ex.name,
        progress=False,
        **ex.data,
    )
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    cols = [
        "khat",
        "verdict",
        "elbo",
        "iwelbo",
        "ess",
        "ms_per_step",
        "num_params",
        "mean_error_max",
        "sd_ratio_worst",
        "sd_ratio_median",
        "iqr_ratio_worst",
        "w1_unconstrained",
    ]
    print(f"eight_schools_centered, {args.steps} steps per guide, seed {args.seed}")
    print(cmp.table[cols].to_string(float_format=lambda v: f"{v:.3g}"))
    tau = cmp.errors[cmp.errors["parameter"] == "tau"].set_index("guide")["sd_ratio"]
    print("\ntau sd / reference sd:", ", ".join(f"{g} {r:.2f}" for g, r in tau.items()))
    k = cmp.table["khat"]
    better = [
        g for g in FLOWS if g in k and k[g] < k["meanfield"] and abs(tau[g] - 1) < abs(tau["meanfield"] - 1)
    ]
    ok = k["meanfield"] > 0.7 and bool(better)
    print(
        f"mean-field k-hat {k['meanfield']:.2f} > 0.7: {k['meanfield'] > 0.7}; flows with lower "
        f"k-hat and closer tau sd: {', '.join(better) or 'none'} -> {'PASS' if ok else 'FAIL'}"
    )
    if args.out:
        print(f"report: {cmp.save(args.out)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
