"""Marginal accuracy of the coupling-flow guides (nice, realnvp, glow, nsf) on the banana and the
10-D funnel, against their exact references.

Usage: ``python benchmarks/coupling_accuracy.py [--steps 3000] [--guides nice,realnvp,glow,nsf]
[--examples banana,funnel]``. One thread; fixed seed 0; 20,000 guide draws per fit. Prints one row
per (example, guide): banana sds of x0, x1 (exact 10 and 4.359); funnel sd of log_scale (exact 3)
and the mean relative error of the x IQRs; plus the fit's wall time and final loss.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyro
import torch
from pyro.infer import Predictive

from pyro_nf import fit, make_guide
from pyro_nf.examples import get_example

NUM_DRAWS = 20_000


def run(example: str, guide_name: str, steps: int, lr: float, particles: int, lr_decay: float) -> dict:
    pyro.clear_param_store()
    ex = get_example(example)
    guide = make_guide(guide_name, ex.model)
    start = time.perf_counter()
    result = fit(
        ex.model,
        guide,
        num_steps=steps,
        lr=lr,
        lr_decay=lr_decay,
        num_particles=particles,
        seed=0,
        progress=False,
        **ex.data,
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        draws = Predictive(
            ex.model, guide=guide, num_samples=NUM_DRAWS, parallel=True, return_sites=list(ex.reference)
        )(**ex.data)
    d = {k: v.reshape(NUM_DRAWS, -1).double().numpy() for k, v in draws.items()}
    row = {"example": example, "guide": guide_name, "seconds": seconds, "final_loss": result.losses[-1]}
    if example == "banana":
        row["sd_x0"] = float(d["x0"].std())
        row["sd_x1"] = float(d["x1"].std())
    else:
        row["sd_log_scale"] = float(d["log_scale"].std())
        q75, q25 = np.percentile(d["x"], [75, 25], axis=0)
        exact = ex.reference["x"]["q75"] - ex.reference["x"]["q25"]
        row["x_iqr_rel_err"] = float(np.mean(np.abs((q75 - q25) - exact) / exact))
        row["x_iqr_mean"] = float(np.mean(q75 - q25))
        row["x_iqr_exact"] = float(np.mean(exact))
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--lr-decay", type=float, default=0.1)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--guides", default="nice,realnvp,glow,nsf")
    parser.add_argument("--examples", default="banana,funnel")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"steps={args.steps} lr={args.lr} lr_decay={args.lr_decay} particles={args.particles}")
    for example in args.examples.split(","):
        for name in args.guides.split(","):
            row = run(example, name, args.steps, args.lr, args.particles, args.lr_decay)
            print(
                " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                flush=True,
            )


if __name__ == "__main__":
    main()
