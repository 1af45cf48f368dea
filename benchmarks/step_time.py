"""Marginal cost of an SVI step through ``pyro_nf.fit`` (fast path) against Pyro's ``SVI`` and a
hand-written eager PyTorch loop, per guide and latent dimension; peak memory; logistic regression.

    python benchmarks/step_time.py [--dims 2,10,100,1000,5000] [--rounds R] [--steps S]
                                   [--threads T] [--no-memory] [--quick]

Model (tables 1, 2): ``x ~ Normal(0, 1)^D``, five observations ``y_n ~ Normal(x, 1)``.

Table 1, IAF at equal architecture (``K = 2`` layers, MADE ``D -> H -> H -> 2D``, ReLU, no skip
connections, ``H = max(2D, 32)``; Pyro's MADE needs ``H >= D``, so D <= 512 only):

- ``fit`` = ``pyro_nf.fit(model, AutoIAF(..., skip_connections=False), num_steps=n)``: its
  *marginal* cost per step, ``(wall(n0 + S) - wall(n0)) / S`` of two fits of one guide (set-up,
  the fast-path plan and the guard's first snapshot cancel); path = the path ``fit`` reported.
  Both fits replay the recorded step (:mod:`pyro_nf.training.replay`, which ``fit`` uses from
  ``MIN_STEPS`` = 1000 steps on; ``--replay-min-steps`` sets it here, default 0 so that the short
  differenced fits do what a long fit does); ``trace s`` = seconds the trace and its check took
  (once per fit; subtracted from each fit's wall time, so excluded from the marginal cost);
  ``fit no-replay`` = the eager fast path.
- ``fit Trace_ELBO`` = the same with ``fast=False`` (Pyro's ``SVI`` inside ``fit``).
- ``AutoIAFNormal`` = ``SVI(model, AutoIAFNormal(hidden_dim=[H, H], num_transforms=2), Adam,
  Trace_ELBO())``, ``svi.step()`` timed directly; ``AutoNormal`` likewise.
- ``eager`` = ``benchmarks/eager_loop.py``: the same flow, model and Adam in plain PyTorch.
- ``fit K=16`` (at D = 100): 16 particles, vectorised.

Table 2, every registered guide at its defaults (the width cap ``min(max(2D, 32), 512)`` for IAF /
MAF) through ``fit()`` with its recipe switched off (``PLAIN``: one particle, no STL switch, as the
eager loop; with fit()'s defaults the differenced 1- and 3-step fits switch to STL mid-way and
time IAF's D-pass inverse): marginal ms/step; where one step takes over ``--slow`` seconds (MAF at
large D: sampling is D sequential passes per layer) one timed step of a 1-step fit (set-up
included) instead; AutoIAF also against the eager loop of its own architecture (4 layers, skip
connections). ``peak MB`` / ``+MB``: a fresh subprocess imports, resets the kernel's high-water
mark, then builds the guide and runs ``fit(num_steps=2)`` (fit()'s defaults); ``+MB`` is the growth of
``VmHWM`` over the pre-guide resident set. MAF at D >= 5000 is not run (its D-pass sampling would take hours
here): its row says so, with the per-pass cost measured.

Table 3, logistic regression ``w ~ N(0, 1)^10``, ``y_n ~ Bernoulli(sigmoid(x_n . w))``, N in
``--logistic-n``, full batch and subsampled (``pyro.plate(..., subsample_size=100)``, likelihood
scaled by N/100): AutoIAF through ``fit`` (fast, ``PLAIN``), ``fit(fast=False)``, the eager loop.

Table 5 (``--tables 5``, not run by default), AutoIAF at its defaults (4 layers, skip connections,
the capped width) through ``fit()`` with ``PLAIN`` (its replayed step) against the eager loop of the
same architecture, at ``--ab-dims``, ``--ab-rounds`` interleaved rounds of ``--ab-steps`` steps; the
per-round ratios are printed beside their median.

Table 6 (``--tables 6``; needs NumPyro, ``pip install -e '.[bench]'``), AutoIAF through ``fit()``
(replayed) against NumPyro's ``AutoIAFNormal`` with ``svi.update`` under ``jax.jit``
(``benchmarks/numpyro_runner.py``; its compile, the first call, is timed apart and excluded) and the
eager loop, K = 2, ``H = max(min(max(2D, 32), 512), D)`` (NumPyro's MADE needs ``H >= D``), no skip
connections, at ``--numpyro-dims``.

Timing: one process, ``torch.set_num_threads(T)``; for R rounds every configuration in turn
(interleaved, so machine noise spreads evenly), medians over rounds; ratios are medians of
per-round ratios.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoIAFNormal, AutoNormal

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pyro_nf
import eager_loop  # noqa: E402
from timing import FitRunner, eager_runner, fmt, interleave, med, ratio, svi_runner  # noqa: E402

import pyro_nf  # noqa: E402
from pyro_nf.guides.registry import available_guides, make_guide  # noqa: E402
from pyro_nf.training import replay  # noqa: E402

NUM_OBS = 5


def gaussian(dim: int):
    y = torch.randn(NUM_OBS, dim, generator=torch.Generator().manual_seed(0))

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
        with pyro.plate("obs", NUM_OBS):
            pyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)

    return model, eager_loop.gaussian_log_joint(y)


def logistic(n: int, batch: int | None, dim: int = 10):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=gen)
    y = torch.bernoulli(torch.sigmoid(x @ torch.randn(dim, generator=gen)), generator=gen)

    def model():
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
        with pyro.plate("data", n, subsample_size=batch) as idx:
            xb, yb = (x, y) if batch is None else (x[idx], y[idx])
            logits = (xb * w).sum(-1)  # (N,), or (K, N) for w of shape (K, 1, dim) under K particles
            pyro.sample("y", dist.Bernoulli(logits=logits), obs=yb)

    return model, eager_loop.logistic_log_joint(x, y, batch)


# fit()'s recipe (16 particles, LR decay, STL from half-way, Laplace start) switched off where a step is
# compared with Pyro's one-particle Trace_ELBO step: equal work per step.
PLAIN = {"num_particles": 1, "lr_decay": None, "stl_after": None, "init": None}


def width(dim: int) -> int:
    return max(2 * dim, 32)


# -- memory: one guide, two fit steps, in a fresh process -------------------------------------
def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def child(spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    warnings.filterwarnings("ignore")
    model, _ = gaussian(1)
    pyro_nf.fit(model, AutoNormal(model), num_steps=2, progress=False)  # one-off allocations
    pyro.clear_param_store()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _status_mb("VmRSS")
    out = {"ok": True, "error": ""}
    t0 = time.perf_counter()
    try:
        model, _ = gaussian(spec["dim"])
        pyro_nf.fit(model, make_guide(spec["guide"], model), num_steps=spec["steps"], progress=False)
    except (MemoryError, RuntimeError) as e:
        out.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:100]}")
    peak = _status_mb("VmHWM")
    out.update(s=time.perf_counter() - t0, peak_mb=peak, delta_mb=peak - base)
    print(json.dumps(out))


def measure_memory(guide: str, dim: int, threads: int, steps: int = 2) -> dict:
    spec = {"guide": guide, "dim": dim, "threads": threads, "steps": steps}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "peak_mb": float("nan"), "delta_mb": float("nan")}
    return json.loads(lines[-1])


# -- the tables -------------------------------------------------------------------------------
def table_iaf(dims: list[int], args) -> None:
    print(
        "\n### 1. AutoIAF through fit() vs Pyro and the eager loop, equal architecture "
        "(K=2, H=max(2D,32), no skip)\n"
    )
    has_numpyro = importlib.util.find_spec("numpyro") is not None
    print(
        f"NumPyro installed: {has_numpyro}" + (" (see table 6)" if has_numpyro else " (table 6 is skipped)")
    )
    print(
        "\n| D | H | fit ms | path | trace s | fit no-replay ms | fit Trace_ELBO ms | AutoIAFNormal ms "
        "| AutoNormal ms | eager ms | fit/AutoIAFNormal | fit/eager | no-replay/eager | fit K=16 / K=1 |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dim in dims:
        if width(dim) > 512:
            continue
        pyro.clear_param_store()
        torch.manual_seed(0)
        model, log_joint = gaussian(dim)
        hid = (width(dim),) * 2

        def iaf(model=model, hid=hid):
            return pyro_nf.AutoIAF(model, num_flows=2, hidden_dims=hid, skip_connections=False)

        runners = {
            # --quick replays only here (tracing every guide's fits would triple the smoke run)
            "fit": FitRunner(model, iaf(), replay_min_steps=0 if args.quick else None, **PLAIN),
            "no_replay": FitRunner(model, iaf(), replay_min_steps=10**9, **PLAIN),
            "fit_slow": FitRunner(model, iaf(), fast=False, **PLAIN),
            "pyro_iaf": svi_runner(model, AutoIAFNormal(model, hidden_dim=list(hid), num_transforms=2)),
            "pyro_normal": svi_runner(model, AutoNormal(model)),
            "eager": eager_runner(log_joint, dim, hid, 2, False),
        }
        if dim == 100 or args.quick:
            runners["fit16"] = FitRunner(model, iaf(), **{**PLAIN, "num_particles": 16})
        runs = interleave(runners, args.rounds, args.steps)
        k16 = fmt(ratio(runs, "fit16", "fit")) if "fit16" in runs else ""
        print(
            f"| {dim} | {hid[0]} | {fmt(med(runs, 'fit'))} | {runners['fit'].path} | "
            f"{fmt(runners['fit'].trace_s)} | {fmt(med(runs, 'no_replay'))} | "
            f"{fmt(med(runs, 'fit_slow'))} | {fmt(med(runs, 'pyro_iaf'))} | "
            f"{fmt(med(runs, 'pyro_normal'))} | {fmt(med(runs, 'eager'))} | "
            f"{ratio(runs, 'fit', 'pyro_iaf'):.3f} | {ratio(runs, 'fit', 'eager'):.3f} | "
            f"{ratio(runs, 'no_replay', 'eager'):.3f} | {k16} |",
            flush=True,
        )


def table_guides(dims: list[int], args) -> None:
    print("\n### 2. Every registered guide at its defaults through fit() (fast path)\n")
    print("| D | guide | path | ms/step | n | vs eager (same arch.) | peak MB | +MB |")
    print("|---:|---|---|---:|---|---:|---:|---:|")
    for dim in dims:
        big = dim >= 1000
        rounds, steps = (max(2, args.rounds // 3), 2) if big else (args.rounds, args.steps)
        for name in available_guides():
            pyro.clear_param_store()
            torch.manual_seed(0)
            model, log_joint = gaussian(dim)
            if name == "maf" and dim >= args.maf_max_dim:
                print(
                    f"| {dim} | maf | - | not run | - | - | - | - |  (D sequential passes per layer "
                    f"to sample; see table 4 for the per-dimension cost)",
                    flush=True,
                )
                continue
            guide = make_guide(name, model)
            t0 = time.perf_counter()
            first = FitRunner(model, guide, n0=1, **PLAIN)  # one particle, as the eager loop
            first_s = time.perf_counter() - t0
            runners = {"fit": first}
            if name == "iaf":
                hid = guide.hidden_dims or guide.default_hidden_dims(dim)
                runners["eager"] = eager_runner(log_joint, dim, hid, guide.num_flows, guide.skip_connections)
            if first_s > args.slow:
                ms, n, vs = first_s * 1e3, "1 step (set-up incl.)", float("nan")
            else:
                runs = interleave(runners, rounds, steps)
                ms, n = med(runs, "fit"), f"{rounds}x{steps}"
                vs = ratio(runs, "fit", "eager") if "eager" in runs else float("nan")
            path = first.path
            del runners, guide, first
            pyro.clear_param_store()  # free this process's copy before the memory child runs
            gc.collect()
            mem = (
                {"peak_mb": float("nan"), "delta_mb": float("nan")}
                if args.no_memory or first_s > args.slow
                else measure_memory(name, dim, args.threads)
            )
            print(
                f"| {dim} | {name} | {path} | {fmt(ms)} | {n} | {fmt(vs, 3)} | "
                f"{fmt(mem['peak_mb'], 0)} | {fmt(mem['delta_mb'], 0)} |",
                flush=True,
            )


def table_iaf_vs_eager(dims: list[int], args) -> None:
    print(
        "\n### 5. AutoIAF at its defaults through fit() (replayed step) vs the eager loop of its "
        "architecture, interleaved\n"
    )
    print(
        "| D | layers | H | skip | rounds x steps | trace s | fit ms | eager ms | fit/eager "
        "| per-round fit/eager |"
    )
    print("|---:|---:|---:|---|---|---:|---:|---:|---:|---|")
    for dim in dims:
        pyro.clear_param_store()
        torch.manual_seed(0)
        model, log_joint = gaussian(dim)
        guide = pyro_nf.AutoIAF(model)
        hid = guide.hidden_dims or guide.default_hidden_dims(dim)
        runners = {
            "fit": FitRunner(model, guide, n0=1, **PLAIN),
            "eager": eager_runner(log_joint, dim, hid, guide.num_flows, guide.skip_connections),
        }
        runs = interleave(runners, args.ab_rounds, args.ab_steps)
        per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(runs["fit"], runs["eager"], strict=True))
        print(
            f"| {dim} | {guide.num_flows} | {hid[0]} | {guide.skip_connections} | "
            f"{args.ab_rounds}x{args.ab_steps} | {fmt(runners['fit'].trace_s)} | {fmt(med(runs, 'fit'))} | "
            f"{fmt(med(runs, 'eager'))} | {ratio(runs, 'fit', 'eager'):.3f} | {per_round} |",
            flush=True,
        )
        del runners, guide


def table_numpyro(dims: list[int], args) -> None:
    print(
        "\n### 6. AutoIAF through fit() (replayed) vs NumPyro's AutoIAFNormal (jax.jit), K=2, "
        "H=max(min(max(2D,32),512),D), no skip, one particle\n"
    )
    if importlib.util.find_spec("numpyro") is None:
        print("NumPyro is not installed (pip install -e '.[bench]'): skipped")
        return
    from numpyro_runner import NumPyroRunner

    print(
        "| D | H | fit ms | trace s | NumPyro ms | NumPyro compile s | eager ms | fit/NumPyro "
        "| eager/NumPyro |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dim in dims:
        pyro.clear_param_store()
        torch.manual_seed(0)
        model, log_joint = gaussian(dim)
        hid = (max(min(width(dim), 512), dim),) * 2  # NumPyro's MADE needs H >= D
        y = torch.randn(NUM_OBS, dim, generator=torch.Generator().manual_seed(0)).numpy()
        guide = pyro_nf.AutoIAF(model, num_flows=2, hidden_dims=hid, skip_connections=False)
        runners = {
            "fit": FitRunner(model, guide, **PLAIN),
            "numpyro": NumPyroRunner(y, hid, 2),
            "eager": eager_runner(log_joint, dim, hid, 2, False),
        }
        # the differenced fits need many steps against the trace time's noise
        rounds, steps = (
            (args.rounds, args.steps) if dim < 1000 else (max(3, args.rounds // 2), max(10, args.steps))
        )
        runs = interleave(runners, rounds, steps)
        print(
            f"| {dim} | {hid[0]} | {fmt(med(runs, 'fit'))} | {fmt(runners['fit'].trace_s)} | "
            f"{fmt(med(runs, 'numpyro'), 3)} | {fmt(runners['numpyro'].compile_s)} | "
            f"{fmt(med(runs, 'eager'))} | "
            f"{ratio(runs, 'fit', 'numpyro'):.2f} | {ratio(runs, 'eager', 'numpyro'):.2f} |",
            flush=True,
        )


def table_logistic(ns: list[int], args) -> None:
    print("\n### 3. Logistic regression (D = 10), AutoIAF K=2 H=32 no skip\n")
    print("| N | batch | fit ms | path | fit Trace_ELBO ms | eager ms | fit/Trace_ELBO | fit/eager |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for n in ns:
        for batch in (None, 100):
            pyro.clear_param_store()
            torch.manual_seed(0)
            model, log_joint = logistic(n, batch)

            def iaf(model=model):
                return pyro_nf.AutoIAF(model, num_flows=2, hidden_dims=(32, 32), skip_connections=False)

            runners = {  # one particle, as the eager loop
                "fit": FitRunner(model, iaf(), **PLAIN),
                "slow": FitRunner(model, iaf(), fast=False, **PLAIN),
                "eager": eager_runner(log_joint, 10, (32, 32), 2, False),
            }
            runs = interleave(runners, args.rounds, args.steps)
            print(
                f"| {n} | {batch or 'full'} | {fmt(med(runs, 'fit'))} | {runners['fit'].path} | "
                f"{fmt(med(runs, 'slow'))} | {fmt(med(runs, 'eager'))} | "
                f"{ratio(runs, 'fit', 'slow'):.3f} | {ratio(runs, 'fit', 'eager'):.3f} |",
                flush=True,
            )


def table_maf(dims: list[int], args) -> None:
    print(
        "\n### 4. Sampling cost of one layer, MAF (D sequential passes) vs IAF (one pass), "
        "K=1 draw, forward + backward\n"
    )
    print(
        "| D | H | IAF ms | MAF ms | MAF/IAF | MAF ms per dimension | MAF fixed-point ms (previous) "
        "| fixed-point/MAF |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    from pyro_nf.transforms import AffineAutoregressive

    for dim in dims:
        hid = (min(width(dim), 512),) * 2
        layers = {d: AffineAutoregressive(dim, hid, direction=d) for d in ("iaf", "maf")}
        for layer in layers.values():
            with torch.no_grad():
                layer.made.output.weight.normal_(0, 0.01)

        def run(layer, dim=dim):
            def go(n):
                t0 = time.perf_counter()
                for _ in range(n):
                    y, ladj = layer.forward_and_log_det(torch.randn(1, dim))
                    (y.sum() + ladj.sum()).backward()
                return (time.perf_counter() - t0) / n * 1e3

            return go

        def fixed_point(layer=layers["maf"], dim=dim):  # the previous algorithm: D full passes
            def go(n):
                t0 = time.perf_counter()
                for _ in range(n):
                    x, weights = torch.randn(1, dim), layer.made.masked_weights()
                    out = torch.zeros_like(x)
                    for _ in range(dim):
                        shift, log_scale = layer._shift_log_scale(weights, out)
                        out = x * torch.exp(log_scale) + shift
                    (out.sum() + log_scale.sum()).backward()
                return (time.perf_counter() - t0) / n * 1e3

            return go

        n_maf = 1 if dim >= 1000 else args.steps
        rounds = 1 if dim >= 1000 else args.rounds
        runs: dict[str, list[float]] = {"iaf": [], "maf": [], "fixed": []}
        for _ in range(rounds):
            runs["iaf"].append(run(layers["iaf"])(args.steps))
            runs["maf"].append(run(layers["maf"])(n_maf))
            if dim <= args.fixed_point_max_dim:
                runs["fixed"].append(fixed_point()(n_maf))
            else:
                runs["fixed"].append(float("nan"))
        print(
            f"| {dim} | {hid[0]} | {fmt(med(runs, 'iaf'))} | {fmt(med(runs, 'maf'))} | "
            f"{ratio(runs, 'maf', 'iaf'):.1f} | {fmt(med(runs, 'maf') / dim, 3)} | "
            f"{fmt(med(runs, 'fixed'))} | {fmt(ratio(runs, 'fixed', 'maf'), 1)} |",
            flush=True,
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default="2,10,100,1000,5000")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="steps per configuration per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--slow",
        type=float,
        default=20.0,
        help="seconds: a first step slower than this is timed once (see table 2)",
    )
    p.add_argument("--maf-max-dim", type=int, default=100000, help="MAF is not run at this D or above")
    p.add_argument("--maf-dims", default="10,100,1000,5000")
    p.add_argument("--fixed-point-max-dim", type=int, default=1000)
    p.add_argument("--logistic-n", default="1000,100000")
    p.add_argument(
        "--tables", default="1,2,3,4", help="any of 1-6, in the order given (5, 6 are not defaults)"
    )
    p.add_argument("--ab-dims", default="1000,5000", help="table 5's dimensions")
    p.add_argument("--numpyro-dims", default="100,1000", help="table 6's dimensions")
    p.add_argument("--ab-rounds", type=int, default=5, help="table 5's rounds")
    p.add_argument("--ab-steps", type=int, default=3, help="table 5's steps per configuration per round")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory columns")
    p.add_argument(
        "--replay-min-steps",
        type=int,
        default=0,
        help="pyro_nf.training.replay.MIN_STEPS for the timed fits (fit() itself: 1000)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: D=2, 1 round x 1 step, logistic N=1000, MAF at D=4, no memory, replay in table 1",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    if p.parse_known_args()[0].quick:
        p.set_defaults(
            dims="2",
            rounds=1,
            steps=1,
            logistic_n="1000",
            maf_dims="4",
            no_memory=True,
            replay_min_steps=10**9,
        )
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.child:
        child(json.loads(args.child))
        return 0
    torch.set_num_threads(args.threads)
    replay.MIN_STEPS = args.replay_min_steps
    pyro.enable_validation(True)  # Pyro's default: what a user's SVI runs with
    dims = [int(d) for d in args.dims.split(",")]
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, torch threads {args.threads}, "
        f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.steps} steps (D >= 1000: "
        f"{max(2, args.rounds // 3)} rounds x 2 steps), medians; ratios = medians of per-round ratios"
    )
    run = {
        "1": lambda: table_iaf(dims, args),
        "2": lambda: table_guides(dims, args),
        "3": lambda: table_logistic([int(n) for n in args.logistic_n.split(",")], args),
        "4": lambda: table_maf([int(d) for d in args.maf_dims.split(",")], args),
        "5": lambda: table_iaf_vs_eager([int(d) for d in args.ab_dims.split(",")], args),
        "6": lambda: table_numpyro([int(d) for d in args.numpyro_dims.split(",")], args),
    }
    for table in args.tables.split(","):  # in the order given
        run[table]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
