"""SVI step time and peak memory of the flow guides against Pyro's, at several latent dimensions.

    python benchmarks/step_time.py [--dims 2,10,100,1000] [--rounds N] [--steps S] [--flows K]
                                   [--threads T] [--quick]

Model (the same for every guide): ``x ~ Normal(0, 1)^D``, five observations ``y_n ~ Normal(x, 1)``.

Guides: pyro_nf ``AutoPlanar`` (its default 16 layers), ``AutoIAF`` and ``AutoMAF`` with ``K``
layers (``--flows``, default 2) of hidden widths ``(H, H)``, ``H = max(2D, 32)`` (pyro_nf's default
width rule; Pyro's MADE needs ``H >= D``), Pyro's ``AutoIAFNormal`` and ``AutoNormal``. The IAF
rows come in two pairs of identical architecture (K layers, MADE ``D -> H -> H -> 2D``, ReLU):

- ``AutoIAF`` = ``AutoIAF(skip_connections=False)`` vs ``AutoIAFNormal`` = Pyro's
  ``AutoIAFNormal(hidden_dim=[H, H], num_transforms=K)`` (its network has no skip connections);
- ``AutoIAF+skip`` = ``AutoIAF(skip_connections=True)`` (direct input-output connections fused
  into the output layer) vs ``AutoIAFNormal+skip``: what ``AutoIAFNormal`` builds, with
  ``AutoRegressiveNN(..., skip_connections=True)`` (a separate bias-free masked ``D -> 2D``
  layer). ``AutoIAFNormal`` cannot take the option: its ``**kwargs`` go to
  ``AffineAutoregressive``, which rejects ``skip_connections``, so the row is
  ``AutoNormalizingFlow(model, lambda d: iterated(K, AffineAutoregressive(AutoRegressiveNN(...))))``,
  the same construction ``AutoIAFNormal`` makes.

``AutoMAF`` runs at pyro_nf's default (skip connections on).
Every guide has its own ``Adam(lr=1e-3)`` and ``Trace_ELBO`` with one particle.

Timing, per D, in one process with a fixed ``torch.set_num_threads``: every guide takes one warm-up
step (set-up, first Adam state; its time is the ``first`` column) and ``--warmup`` more; then for
``R`` rounds, each guide in turn runs ``S`` steps and the mean ms/step of that run is recorded.
Interleaving spreads machine noise (other processes, frequency changes) over all guides alike.
``ms/step`` is the median over rounds; ``ratio`` is the median over rounds of the per-round ratio
to the row's baseline (the ``vs`` column: ``AutoIAFNormal+skip`` for ``AutoIAF+skip``, otherwise
``AutoIAFNormal``; the same round, so a noisy round cancels out); ``ratio range`` its min-max.
A guide whose first step takes over ``--slow`` seconds (``AutoMAF`` at large D: sampling is D
sequential passes per layer, about 20 s per layer at D = 1000) is not stepped again: ``n`` =
``first``, its ``ms/step`` is that first step (set-up is negligible beside it) and its ratio is to
the reference's median; its memory is not re-measured in the table (see the MAF check below it).

Memory: each (guide, D) runs again in a fresh subprocess, which imports, takes one throw-away
``AutoNormal`` step on a 1-d model (lazy imports), resets the kernel's high-water mark (``5`` into
``/proc/self/clear_refs``) and records its resident set, then builds the guide and takes one SVI
step (set-up, parameters, gradients, Adam state, autograd graph). ``peak MB`` is the process's
``VmHWM`` after that step (the whole process, Python and torch included) and ``+MB`` its increase
over the baseline: what the guide's first step costs.

MAF-direction check: at ``--maf-dim`` (default 1000) and pyro_nf's defaults (K = 4, H = max(2D, 32))
one ``AutoMAF`` step (no cap) and one step of Pyro's MAF direction (Pyro's
``affine_autoregressive(...).inv`` in ``AutoNormalizingFlow``, sampled by its sequential
``_inverse``) under ``RLIMIT_AS = --cap-gb`` (default 8 GB: the machine is shared). Pyro's
``MaskedLinear`` re-forms ``weight * mask`` on every pass and autograd keeps each copy, so a step
needs about ``K * D * (D*H + H*H + 2*D*H) * 4`` bytes; the script prints that estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from pyro.distributions.transforms import AffineAutoregressive, affine_autoregressive, iterated
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormal, AutoNormalizingFlow
from pyro.nn import AutoRegressiveNN

import pyro_nf

GUIDES = (
    "AutoPlanar",
    "AutoIAF",
    "AutoIAFNormal",
    "AutoIAF+skip",
    "AutoIAFNormal+skip",
    "AutoMAF",
    "AutoNormal",
)
REF = "AutoIAFNormal"
BASELINE = {"AutoIAF+skip": "AutoIAFNormal+skip"}  # every other row: REF
PAIRS = (("AutoIAF", "AutoIAFNormal"), ("AutoIAF+skip", "AutoIAFNormal+skip"))
NUM_OBS = 5


def make_model(dim: int):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(NUM_OBS, dim, generator=gen)

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
        with pyro.plate("obs", NUM_OBS):
            pyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)

    return model


def width(dim: int) -> int:
    return max(2 * dim, 32)


class _PyroMAFLayer(TransformModule):
    """Pyro's affine autoregressive layer used in the MAF direction: sampling runs its
    sequential ``_inverse`` (as ``.inv``), the log-det comes from its cached log-scale."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, layer: TransformModule) -> None:
        super().__init__(cache_size=1)
        self.layer = layer

    def _call(self, x):
        return self.layer.inv(x)

    def _inverse(self, y):
        return self.layer(y)

    def log_abs_det_jacobian(self, x, y):
        return -self.layer.log_abs_det_jacobian(y, x)


def make_guide(name: str, model, dim: int, flows: int):
    hid = width(dim)
    if name == "AutoPlanar":
        return pyro_nf.AutoPlanar(model)
    if name in ("AutoIAF", "AutoIAF+skip"):
        return pyro_nf.AutoIAF(
            model, num_flows=flows, hidden_dims=(hid, hid), skip_connections=name == "AutoIAF+skip"
        )
    if name == "AutoMAF":
        return pyro_nf.AutoMAF(model, num_flows=flows, hidden_dims=(hid, hid))
    if name == "AutoIAFNormal":
        return AutoIAFNormal(model, hidden_dim=[hid, hid], num_transforms=flows)
    if name == "AutoIAFNormal+skip":  # AutoIAFNormal's construction; it can't pass the option
        return AutoNormalizingFlow(
            model,
            lambda d: iterated(
                flows, lambda: AffineAutoregressive(AutoRegressiveNN(d, [hid, hid], skip_connections=True))
            ),
        )
    if name == "AutoNormal":
        return AutoNormal(model)
    if name == "PyroMAF":
        return AutoNormalizingFlow(
            model,
            lambda d: ComposeTransformModule(
                [_PyroMAFLayer(affine_autoregressive(d, hidden_dims=[hid, hid])) for _ in range(flows)]
            ),
        )
    raise ValueError(name)


def make_svi(name: str, dim: int, flows: int) -> SVI:
    model = make_model(dim)
    return SVI(model, make_guide(name, model, dim, flows), pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())


def timed_steps(svi: SVI, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        svi.step()
    return (time.perf_counter() - t0) / n * 1e3


# -- memory: one guide, one step, in a fresh process ------------------------------------------
def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def child(spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    if spec.get("cap_gb"):
        cap = int(spec["cap_gb"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    make_svi("AutoNormal", 1, 1).step()  # lazy imports and one-off allocations, not the guide's
    pyro.clear_param_store()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark VmHWM to the current RSS
    base = _status_mb("VmRSS")
    out = {"ok": True, "error": ""}
    t0 = time.perf_counter()
    try:
        svi = make_svi(spec["guide"], spec["dim"], spec["flows"])
        svi.step()
    except (MemoryError, RuntimeError) as e:
        out.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
    peak = _status_mb("VmHWM")
    out.update(s=time.perf_counter() - t0, peak_mb=peak, delta_mb=peak - base)
    print(json.dumps(out))


def measure_memory(guide: str, dim: int, flows: int, threads: int, cap_gb: float | None = None) -> dict:
    spec = {"guide": guide, "dim": dim, "flows": flows, "threads": threads, "cap_gb": cap_gb}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        return {
            "ok": False,
            "error": f"exit {proc.returncode}: {tail}",
            "s": float("nan"),
            "peak_mb": float("nan"),
            "delta_mb": float("nan"),
        }
    return json.loads(lines[-1])


# -- timing: all guides interleaved in this process -------------------------------------------
def bench_dim(dim: int, args) -> dict[str, dict]:
    pyro.clear_param_store()
    torch.manual_seed(0)
    svis = {g: make_svi(g, dim, args.flows) for g in GUIDES}
    res: dict[str, dict] = {}
    for g, svi in svis.items():
        first = timed_steps(svi, 1)
        slow = first > args.slow * 1e3
        if not slow and args.warmup:
            timed_steps(svi, args.warmup)
        res[g] = {"first": first, "slow": slow, "runs": []}
    for _ in range(args.rounds):
        for g, svi in svis.items():
            if not res[g]["slow"]:
                res[g]["runs"].append(timed_steps(svi, args.steps))
    for g, row in res.items():
        row["vs"] = BASELINE.get(g, REF)
        ref_runs = res[row["vs"]]["runs"]
        if row["slow"]:  # only its first step was timed: compare with the baseline's median
            ref = statistics.median(ref_runs)
            row.update(ms=row["first"], ratio=row["first"] / ref, lo=float("nan"), hi=float("nan"), n="first")
            continue
        ratios = [t / ref for t, ref in zip(row["runs"], ref_runs, strict=True)]
        row.update(
            ms=statistics.median(row["runs"]),
            ratio=statistics.median(ratios),
            lo=min(ratios),
            hi=max(ratios),
            n=f"{args.rounds}x{args.steps}",
        )
    return res


def fmt(v: float, nd: int = 1) -> str:
    return "n/a" if v != v else f"{v:.{nd}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default="2,10,100,1000")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="steps per guide per round")
    p.add_argument("--warmup", type=int, default=3, help="extra warm-up steps after the first")
    p.add_argument("--flows", type=int, default=2, help="K for the IAF guides and AutoMAF")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--slow", type=float, default=5.0, help="seconds; see the module docstring")
    p.add_argument("--maf-dim", type=int, default=1000, help="0 skips the MAF-direction check")
    p.add_argument("--cap-gb", type=float, default=8.0)
    p.add_argument("--no-memory", action="store_true", help="skip the per-guide memory column")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: defaults dims 2,10, 3 rounds x 3 steps, MAF check at D=20",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    if p.parse_known_args()[0].quick:
        p.set_defaults(dims="2,10", rounds=3, steps=3, warmup=1, maf_dim=20)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.child:
        child(json.loads(args.child))
        return 0
    dims = [int(d) for d in args.dims.split(",")]
    torch.set_num_threads(args.threads)
    make_svi("AutoNormal", 1, 1).step()  # the process's one-off costs (lazy imports) go here
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, torch threads {args.threads}, "
        f"{os.cpu_count()} CPUs; K = {args.flows} layers (AutoIAF*, AutoMAF, AutoIAFNormal*), "
        f"H = max(2D, 32) (both hidden layers); AutoPlanar 16 layers; {args.rounds} rounds x "
        f"{args.steps} steps after {1 + args.warmup} warm-up steps\n"
    )
    print("| D | H | guide | first ms | ms/step | n | ratio | vs | ratio range | peak MB | +MB |")
    print("|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|")
    verdicts = []
    for dim in dims:
        res = bench_dim(dim, args)
        for g, row in res.items():
            skip = args.no_memory or row["slow"]
            mem = (
                {"peak_mb": float("nan"), "delta_mb": float("nan")}
                if skip
                else measure_memory(g, dim, args.flows, args.threads)
            )
            rng = "n/a" if row["slow"] else f"{row['lo']:.2f}-{row['hi']:.2f}"
            print(
                f"| {dim} | {width(dim)} | {g} | {fmt(row['first'])} | {fmt(row['ms'], 2)} | "
                f"{row['n']} | {row['ratio']:.3f} | {row['vs']} | {rng} | "
                f"{fmt(mem['peak_mb'], 0)} | {fmt(mem['delta_mb'], 0)} |",
                flush=True,
            )
        verdicts.append((dim, [res[ours]["ratio"] for ours, _ in PAIRS]))
    for i, (ours, theirs) in enumerate(PAIRS):
        print(
            f"\n{ours} / {theirs} median ratio <= 1.1: "
            + ", ".join(f"D={d} {r[i]:.3f} {'ok' if r[i] <= 1.1 else 'OVER'}" for d, r in verdicts),
            end="",
        )
    print()
    if args.maf_dim:
        maf_check(args)
    return 0


def maf_check(args) -> None:
    dim, flows, hid = args.maf_dim, 4, width(args.maf_dim)
    est = flows * dim * (dim * hid + hid * hid + 2 * dim * hid) * 4 / 2**30
    print(
        f"\nMAF direction at D = {dim}, K = {flows}, H = {hid} (pyro_nf defaults), one SVI step "
        f"each in a fresh process, {args.threads} thread(s):"
    )
    ours = measure_memory("AutoMAF", dim, flows, args.threads)
    print(
        f"- pyro_nf AutoMAF, no cap: {'completed' if ours['ok'] else 'FAILED ' + ours['error']}"
        f" in {ours['s']:.1f} s, peak RSS {ours['peak_mb']:.0f} MB "
        f"(+{ours['delta_mb']:.0f} MB over the pre-guide baseline); under 4 GB: "
        f"{ours['ok'] and ours['peak_mb'] < 4096}",
        flush=True,
    )
    theirs = measure_memory("PyroMAF", dim, flows, args.threads, cap_gb=args.cap_gb)
    what = "completed" if theirs["ok"] else f"FAILED at the cap ({theirs['error']})"
    print(
        f"- Pyro affine_autoregressive(...).inv, RLIMIT_AS = {args.cap_gb:g} GB: {what} after "
        f"{theirs['s']:.1f} s, peak RSS {theirs['peak_mb']:.0f} MB. Estimated need (masked "
        f"weight copies kept for backward, K*D*(DH+H^2+2DH)*4 B): {est:.3g} GB"
    )


if __name__ == "__main__":
    sys.exit(main())
