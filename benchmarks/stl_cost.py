"""Cost of an AutoIAF step with the sticking-the-landing gradient against the plain step, per dimension.

    python benchmarks/stl_cost.py [--dims 10,100,400] [--steps 40]

Why ``fit()`` skips its STL phase for guides with a sequential inverse above
``pyro_nf.training.schedule.STL_MAX_SEQUENTIAL_DIM``: the STL log q of a draw needs IAF's D-pass inverse.
Model ``x ~ N(0, 1)^D``, ``y ~ N(x, 1)`` observed at 0; AutoIAF at its defaults, fit()'s 16 particles,
no Laplace start, no early stop, ``stl_after=None`` (the guide's ``stl`` flag fixed for the whole fit); one
thread; plain and STL fits alternate twice and the second of each pair is kept (the first pays set-up
and imports). Prints ms per step (set-up included, so use enough steps) and the STL / plain ratio.
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.distributions as dist
import torch

from pyro_nf import fit, make_guide


def ms_per_step(dim: int, stl: bool, steps: int) -> float:
    def model() -> None:
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
        pyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=torch.zeros(dim))

    pyro.clear_param_store()
    guide = make_guide("iaf", model, stl=stl)
    start = time.perf_counter()
    fit(model, guide, num_steps=steps, progress=False, stl_after=None, init=None, early_stop=None, seed=0)
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="10,100,400")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| D | plain ms | STL ms | STL / plain |\n|---:|---:|---:|---:|")
    for dim in [int(d) for d in args.dims.split(",")]:
        times = {}
        for stl in (False, True, False, True):  # the second of each kind is kept
            times[stl] = ms_per_step(dim, stl, args.steps)
        plain, stl_ms = times[False], times[True]
        print(f"| {dim} | {plain:.1f} | {stl_ms:.1f} | {stl_ms / plain:.1f} |", flush=True)


if __name__ == "__main__":
    main()
