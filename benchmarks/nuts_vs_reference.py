"""Check that a built-in example's model is the reference posterior: short NUTS against the summaries.

    python benchmarks/nuts_vs_reference.py [--examples a,b] [--warmup W] [--draws N] [--seed S]

For each example (default: every one with posteriordb or Inference Gym NUTS references), Pyro's NUTS
(one chain, ``float64``, seeded, dense mass matrix up to 20 latent dimensions, diagonal above)
draws from the model; every reference site (latent and deterministic) is summarised per element
and compared with the reference:

- ``z``: standardised mean error ``(mean_nuts - mean_ref) / sqrt(mcse_nuts^2 + mcse_ref^2)``, where
  ``mcse_nuts = sd_nuts / sqrt(ess_nuts)`` (ArviZ bulk ESS of the one chain) and ``mcse_ref`` the
  reference's ``mcse_mean`` where the file has it (else ``sd_ref / sqrt(10000)``). For a model that
  is the reference posterior, ``|z|`` is about N(0, 1): a few elements past 3 in 100 is noise;
  a wrong prior or likelihood shows as ``|z|`` in the tens.
- ``sd ratio``: ``sd_nuts / sd_ref``; its noise is about ``1 / sqrt(2 n)`` with ``n`` the ESS of the sd
  (ArviZ ``method="sd"``), which for one short chain is far below the bulk ESS.

Prints one row per site (worst element) and a verdict per example: ``ok`` when max ``|z|`` < 4
and every sd ratio is within ``1 +- 4 / sqrt(2 ess_sd)`` (and within 0.75..1.33), else ``CHECK``.
"""

from __future__ import annotations

import argparse
import math
import time

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, Predictive

from pyro_nf.examples import get_example
from pyro_nf.examples._data import load_json

#: Examples with sampled references, and their JSON files (for the MCSEs).
FILES = {
    "eight_schools_noncentered": "eight_schools_noncentered.json",
    "german_credit": "german_credit_logistic.json",
    "kilpisjarvi": "kilpisjarvi.json",
    "sblrc_blr": "sblrc_blr.json",
    "arK": "arK.json",
    "gp_pois_regr": "gp_pois_regr.json",
    "low_dim_gauss_mix": "low_dim_gauss_mix.json",
    "stochastic_volatility": "stochastic_volatility_sp500_small.json",
}
NEW = ["kilpisjarvi", "sblrc_blr", "arK", "gp_pois_regr", "low_dim_gauss_mix", "stochastic_volatility"]


def _ref_mcse(doc: dict, site: str, shape: tuple, sd: np.ndarray) -> np.ndarray:
    keys = {"w": "weights"}
    entry = doc["reference"].get(keys.get(site, site), {})
    if "mcse_mean" in entry:
        return np.broadcast_to(np.asarray(entry["mcse_mean"], dtype=np.float64), shape)
    return sd / math.sqrt(10_000)


def check(name: str, warmup: int, draws: int, seed: int, progress: bool = False, jit: bool = False) -> bool:
    ex = get_example(name)
    doc = load_json(FILES[name])
    pyro.set_rng_seed(seed)
    dim = sum(int(np.prod(v["mean"].shape)) for k, v in ex.reference.items())
    kernel = NUTS(
        ex.model,
        full_mass=dim <= 20,
        max_tree_depth=10,
        target_accept_prob=0.9,
        jit_compile=jit,
        ignore_jit_warnings=True,
    )
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, disable_progbar=not progress)
    start = time.perf_counter()
    mcmc.run(**ex.data)
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples()
    extra = [s for s in ex.reference if s not in samples]
    if extra:
        samples.update(Predictive(ex.model, posterior_samples=samples, return_sites=extra)(**ex.data))
    divergences = len(mcmc.diagnostics()["divergences"]["chain 0"])
    ok = True
    print(f"\n{name}: NUTS {warmup}+{draws}, {seconds:.0f} s, {divergences} divergences")
    print(
        f"  {'site':28s} {'n':>4s} {'max|z|':>7s} {'sd ratio min..max':>18s} {'min ess':>8s} {'ess sd':>7s}"
        f"  worst element: nuts mean (ref mean +- ref sd)"
    )
    for site, stats in ex.reference.items():
        x = samples[site].double().numpy().reshape(draws, -1)
        ess = np.array([az.ess(x[:, i]) for i in range(x.shape[1])])
        ess_sd = np.array([az.ess(x[:, i], method="sd") for i in range(x.shape[1])])
        mean, sd = x.mean(0), x.std(0, ddof=1)
        ref_mean, ref_sd = stats["mean"].reshape(-1), stats["sd"].reshape(-1)
        mcse = np.sqrt((sd / np.sqrt(ess)) ** 2 + _ref_mcse(doc, site, ref_sd.shape, ref_sd) ** 2)
        z = (mean - ref_mean) / mcse
        ratio = sd / ref_sd
        tol = 4.0 / np.sqrt(2.0 * ess_sd)
        site_ok = bool(
            np.all(np.abs(z) < 4)
            and np.all(np.abs(ratio - 1) < tol)
            and np.all((ratio > 0.75) & (ratio < 1.33))
        )
        ok &= site_ok
        i = int(np.argmax(np.abs(z)))
        print(
            f"  {site:28s} {x.shape[1]:4d} {np.abs(z).max():7.2f} {ratio.min():8.3f}..{ratio.max():<8.3f}"
            f" {ess.min():8.0f} {ess_sd.min():7.0f}"
            f"  [{i}] {mean[i]:.5g} ({ref_mean[i]:.5g} +- {ref_sd[i]:.3g})"
            f"{'' if site_ok else '  <-- CHECK'}"
        )
    print(f"  verdict: {'ok' if ok else 'CHECK'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default=",".join(NEW))
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show NUTS progress bars")
    parser.add_argument("--jit", action="store_true", help="JIT-compile the potential (Pyro's jit_compile)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    results = {
        n: check(n, args.warmup, args.draws, args.seed, args.progress, args.jit)
        for n in args.examples.split(",")
    }
    print("\nsummary: " + ", ".join(f"{n} {'ok' if v else 'CHECK'}" for n, v in results.items()))


if __name__ == "__main__":
    main()
