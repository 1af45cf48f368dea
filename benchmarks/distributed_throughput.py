"""Throughput of data-parallel fit (observations per second) against the number of processes.

    python benchmarks/distributed_throughput.py [--rows 1000000] [--features 10] [--steps 20]
                                                [--warmup 3] [--rounds 5] [--processes 2]
    torchrun --nproc_per_node=2 benchmarks/distributed_throughput.py ...   # the same, launched by torchrun

Without ``RANK`` in the environment the script launches ``--processes`` copies of itself with the
variables ``torchrun`` sets (gloo, 127.0.0.1, a free port) and waits for them.

Model: Bayesian logistic regression, ``N`` observations (default 10^6) of ``F`` features (default
10), ``w ~ Normal(0, 1)^F``, ``b ~ Normal(0, 5)``, ``y_n ~ Bernoulli(logits = x_n . w + b)`` in a
plate over the data; float32. Guide: pyro_nf ``AutoIAF(num_flows=2, hidden_dims=(32, 32))`` over
the 11 latent dimensions; ``Trace_ELBO`` with one particle, Adam, ``lr=1e-3``. Every process runs
``torch.set_num_threads(1)``.

Configurations, all in one launch of ``P`` processes and interleaved round by round (each round
runs them in a rotated order, so machine noise spreads over all alike):

- ``1 process, plain``: rank 0 alone, ``fit(..., distributed=False)`` on all ``N`` rows (the baseline);
- ``1 process, group``: rank 0 alone in a one-process group (``DataParallel(group=...)``): the
  cost of the hooks and the (trivial) all-reduce;
- ``P processes``: every rank on its ``N / P`` rows (``pyro_nf.shard``), gradients all-reduced.

Idle ranks wait in a gloo barrier (blocked on a socket, no CPU). Each run is one ``fit()`` of
``warmup + steps`` steps; its time is taken by the ``callback`` from the end of step ``warmup`` to
the end of the last step (set-up, first steps and the final check excluded), ``obs/s = N * steps /
time``. Reported: the median over rounds, the median per-round ratio to the plain baseline
(``speedup``), ``efficiency = speedup / processes``, wall and CPU ms per step (rank 0's process
CPU time, ``time.process_time``: the work it did, whether or not it got a core when it wanted one),
and ``sync ms/step``: rank 0's median time per step inside the gradient all-reduce hook, waiting for
the slower rank included. The machine's load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import pyro
import pyro.distributions as dist
import torch
import torch.distributed as tdist

import pyro_nf.training.distributed as dp
from pyro_nf import AutoIAF, fit
from pyro_nf.training.distributed import DataParallel, init_process_group, shard


def model(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


def make_data(n: int, f: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, f, generator=g)
    w = torch.randn(f, generator=g)
    y = torch.bernoulli(torch.sigmoid(x @ w), generator=g)
    return x, y


_sync_seconds: list[float] = []
_reduce = dp._Group._reduce


def _timed_reduce(self, *args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _reduce(self, *args, **kwargs)
    finally:
        _sync_seconds.append(time.perf_counter() - t0)


def one_run(x, y, steps: int, warmup: int, distributed) -> tuple[float, float, float]:
    """Wall and CPU seconds of this process for the ``steps`` steps after ``warmup``, and median
    seconds per step in the all-reduce hook."""
    pyro.clear_param_store()
    guide = AutoIAF(model, num_flows=2, hidden_dims=(32, 32))
    marks: dict[int, tuple[float, float]] = {}
    _sync_seconds.clear()

    def callback(step: int, loss: float) -> None:
        marks[step] = (time.perf_counter(), time.process_time())

    fit(model, guide, x, y, num_steps=warmup + steps, lr=1e-3, seed=0, progress=False,
        callback=callback, distributed=distributed)  # fmt: skip
    sync = statistics.median(_sync_seconds[warmup:-1]) if len(_sync_seconds) > warmup + 1 else 0.0
    (w0, c0), (w1, c1) = marks[warmup], marks[warmup + steps]
    return w1 - w0, c1 - c0, sync


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    init_process_group("gloo")
    rank, size = tdist.get_rank(), tdist.get_world_size()
    dp._Group._reduce = _timed_reduce
    x, y = make_data(args.rows, args.features)
    xs, ys = shard(x, name="x"), shard(y, name="y")
    solo = tdist.new_group([0])
    configs = ["1 process, plain", "1 process, group", f"{size} processes"]
    times: dict[str, list[float]] = {c: [] for c in configs}
    cpus: dict[str, list[float]] = {c: [] for c in configs}
    syncs: dict[str, list[float]] = {c: [] for c in configs}
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):
        for c in configs[r % 3 :] + configs[: r % 3]:
            if c.startswith(f"{size} processes"):
                t, cpu, s = one_run(xs, ys, args.steps, args.warmup, DataParallel())
            elif rank == 0:
                group = DataParallel(group=solo) if c.endswith("group") else False
                t, cpu, s = one_run(x, y, args.steps, args.warmup, group)
            else:
                t = cpu = s = None
            tdist.barrier()
            if rank == 0:
                times[c].append(t)
                cpus[c].append(cpu)
                syncs[c].append(s)
                print(f"round {r} {c}: {args.rows * args.steps / t:,.0f} obs/s", file=sys.stderr, flush=True)
    if rank == 0:
        base = times[configs[0]]
        print(
            f"\nlogistic regression, N = {args.rows:,}, {args.features} features, AutoIAF(2 layers, 32x32), "
            f"{args.steps} timed steps after {args.warmup}, {args.rounds} rounds, 1 thread per process; "
            f"{os.cpu_count()} CPUs, load average {load0:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end\n"
        )
        header = (
            f"{'configuration':<20} {'processes':>9} {'obs/s (median)':>15} {'speedup':>8} {'range':>12} "
        )
        print(header + f"{'efficiency':>10} {'wall ms/step':>12} {'CPU ms/step':>11} {'sync ms/step':>12}")
        for c in configs:
            p = size if c.endswith("processes") else 1
            obs = statistics.median(args.rows * args.steps / t for t in times[c])
            ratios = [b / t for b, t in zip(base, times[c], strict=True)]
            speed = statistics.median(ratios)
            rng = f"{min(ratios):.2f}-{max(ratios):.2f}"
            sync = 1e3 * statistics.median(syncs[c])
            wall = 1e3 * statistics.median(times[c]) / args.steps
            cpu = 1e3 * statistics.median(cpus[c]) / args.steps
            print(
                f"{c:<20} {p:>9} {obs:>15,.0f} {speed:>8.2f} {rng:>12} {speed / p:>10.2f} {wall:>12.1f} "
                f"{cpu:>11.1f} {sync:>12.2f}"
            )
        print(
            "\nCPU ms/step: rank 0's process CPU time per step (compute + gloo threads). With idle cores, "
            "wall time per step would approach the slowest rank's CPU time; on a shared machine it does not."
        )
    tdist.destroy_process_group()


def launch(args: argparse.Namespace) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(args.processes),
    }
    procs = [
        subprocess.Popen([sys.executable, *sys.argv], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(args.processes)
    ]
    return max(p.wait() for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    if "RANK" in os.environ:
        worker(args)
    else:
        sys.exit(launch(args))


if __name__ == "__main__":
    main()
