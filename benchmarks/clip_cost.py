"""What fit()'s adaptive gradient clip (``grad_clip=AdaptiveClip()``, the default) costs per step.

    python benchmarks/clip_cost.py [--dims 2,10,100,1000] [--guides realnvp,iaf] [--steps 1200] [--rounds 3]

Model: ``x ~ Normal(0, 1)^D`` with five observations ``y_n ~ Normal(x, 1)``. Each configuration is
``fit(model, make_guide(guide, model), num_steps=S, seed=0, init=None, stl_after=None,
early_stop=None)`` (the fast path, its step replayed from 1,000 steps on) with the default clip and
with ``grad_clip=None``, interleaved for ``R`` rounds in one process on one thread; the table prints
the median wall seconds per step of each and the median of the per-round ratios clip / no clip.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch

from pyro_nf import fit, make_guide


def make_model(dim: int):
    y = torch.randn(5, dim)

    def model() -> None:
        x = pyro.sample("x", dist.Normal(torch.zeros(dim), 1.0).to_event(1))
        with pyro.plate("n", 5):
            pyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)

    return model


def one_fit(model, guide_name: str, steps: int, clip: bool) -> float:
    pyro.clear_param_store()
    guide = make_guide(guide_name, model)
    opts = {} if clip else {"grad_clip": None}
    start = time.perf_counter()
    plain = {"init": None, "stl_after": None, "early_stop": None, "progress": False}
    result = fit(model, guide, num_steps=steps, seed=0, **plain, **opts)
    assert result.num_steps == steps
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="2,10,100,1000")
    parser.add_argument("--guides", default="realnvp,iaf")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| guide | D | ms/step, clip | ms/step, no clip | ratio (median of rounds) |")
    print("|---|---:|---:|---:|---:|")
    for guide_name in args.guides.split(","):
        for dim in map(int, args.dims.split(",")):
            model = make_model(dim)
            with_clip, without, ratios = [], [], []
            for _ in range(args.rounds):
                a = one_fit(model, guide_name, args.steps, True)
                b = one_fit(model, guide_name, args.steps, False)
                with_clip.append(a)
                without.append(b)
                ratios.append(a / b)
            print(
                f"| {guide_name} | {dim} | {1e3 * statistics.median(with_clip):.3f} | "
                f"{1e3 * statistics.median(without):.3f} | {statistics.median(ratios):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
