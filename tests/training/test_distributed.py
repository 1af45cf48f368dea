"""Tests for data-parallel fit (pyro_nf.training.distributed): 2 gloo processes vs one process.

The 2-process test launches this file as a script twice, with the environment ``torchrun`` would
set (MASTER_ADDR=127.0.0.1, a free MASTER_PORT, RANK, WORLD_SIZE); each rank runs every scenario of
:func:`worker` on its half of the data and saves what it saw, and the test compares that with one
process on the full data, run meanwhile in the test process itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, config_enumerate
from pyro.ops.indexing import Vindex

from pyro_nf._util import isolated_rng
from pyro_nf.guides import AutoIAF, available_guides, make_guide
from pyro_nf.training import DataParallel, fit, shard
from pyro_nf.training.distributed import _ShardScale, init_process_group, resolve

N, D = 60, 3
STEPS = 30
GUIDES = [g for g in available_guides() if g != "iaf"]  # "iaf": a small one in scenario A


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic-regression data, float64, the same in every process."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(x @ w - 0.3), generator=g)
    return x, y


def logistic(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


def local_latent(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Bernoulli(logits=x @ w + z), obs=y)


@config_enumerate
def mixture(x: torch.Tensor, y: torch.Tensor) -> None:
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        assign = pyro.sample("assign", dist.Categorical(torch.tensor([0.3, 0.7])))
        pyro.sample("x0", dist.Normal(Vindex(locs)[..., assign], 1.0), obs=x[:, 0])


def unplated(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    pyro.sample("y", dist.Bernoulli(logits=x @ w).to_event(1), obs=y)


def run_fit(model, x, y, guide: str = "small iaf", **options) -> dict:
    """Fit a fresh guide (a registered name, or a small AutoIAF); return losses and parameters."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    if guide == "mixture":  # the discrete site is summed out, not guided
        guide = AutoIAF(poutine.block(model, hide=["assign"]), num_flows=2, hidden_dims=(8,))
    elif guide == "small iaf":
        guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
    else:
        guide = make_guide(guide, model)
    options = {
        "num_particles": 1,
        "lr_decay": None,
        "stl_after": None,
        "init": None,
        **options,
    }  # the set-up these tests pin
    result = fit(model, guide, x, y, num_steps=options.pop("num_steps", STEPS), lr=0.05, **options)
    # keyed without the guide's instance prefix: each process names its guides uniquely among its *live*
    # guides, so the prefix (AutoIAF / AutoIAF_1) can differ between ranks and runs
    params = {n.split(".", 1)[-1]: p.detach().clone() for n, p in pyro.get_param_store().named_parameters()}
    return {
        "losses": result.losses,
        "params": params,
        "recoveries": result.num_recoveries,
        "loss": result.loss,
    }


def manual_loop(model, x, y, group=None, steps: int = 10) -> dict:
    """The fast path's shape of step (a loss of the parameters, ``.backward()``, the optimiser),
    with the gradient hook of :mod:`pyro_nf.training.distributed` in a group."""
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
    with isolated_rng():
        guide(x, y)
        trace = poutine.trace(model).get_trace(x, y)
    model = model if group is None else group.prepare(model, trace)
    params = dict(pyro.get_param_store().named_parameters())
    if group is not None:
        group.broadcast(params, guide)
    optim, elbo = torch.optim.Adam(params.values(), lr=0.05), Trace_ELBO()

    def loss_and_grads() -> torch.Tensor:
        loss = elbo.differentiable_loss(model, guide, x, y)
        loss.backward()
        return loss

    step = loss_and_grads if group is None else group.synced(loss_and_grads, params)
    losses = []
    for _ in range(steps):
        value = step()
        losses.append(float(value.detach()) if isinstance(value, torch.Tensor) else value)
        optim.step()
        optim.zero_grad(set_to_none=True)
    return {"losses": losses, "params": {n.split(".", 1)[-1]: p.detach().clone() for n, p in params.items()}}


def _error(fn) -> str:
    try:
        fn()
    except Exception as err:  # recorded for the test to check
        return f"{type(err).__name__}: {err}"
    return "no error"


def worker(out: Path) -> None:
    """One rank of the 2-process test (run as ``python test_distributed.py OUT``)."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    init_process_group()
    rank = torch.distributed.get_rank()
    x, y = data()
    xs, ys = shard(x, name="x"), shard(y, name="y")
    res: dict = {"n_local": len(ys)}
    t0 = time.perf_counter()

    def lap(what: str) -> None:
        print(f"rank {rank}: {what} done at {time.perf_counter() - t0:.1f} s", flush=True)

    # A: shared noise, to compare with one process on the full data
    res["A"] = run_fit(logistic, xs, ys, seed=1, progress=False, distributed=DataParallel(same_noise=True))
    named = DataParallel(plates="data", same_noise=True)
    res["A_named"] = run_fit(logistic, xs, ys, seed=1, num_steps=5, progress=False, distributed=named)
    lap("A")
    # E: every registered guide, shared noise, a few steps
    same = DataParallel(same_noise=True)
    res["E"] = {
        g: run_fit(logistic, xs, ys, g, num_steps=8, seed=4, progress=False, distributed=same) for g in GUIDES
    }
    lap("E")
    # B: independent noise (the default), progress on
    res["B"] = run_fit(logistic, xs, ys, seed=2, distributed=True)
    res["B_next_draw"] = float(torch.rand(()))  # the ranks' random streams differ
    lap("B")
    # C: B interrupted after 15 steps (checkpointed by rank 0), then resumed by the group
    import pyro_nf.training.distributed as module

    writes, real_save = [], module.save_checkpoint
    module.save_checkpoint = lambda path, payload: (writes.append(path), real_save(path, payload))
    ckpt = out / "ckpt.pt"
    first = run_fit(
        logistic, xs, ys, seed=2, num_steps=15, checkpoint=ckpt, checkpoint_every=5, progress=False
    )
    rest = run_fit(logistic, xs, ys, resume=ckpt, checkpoint=ckpt, checkpoint_every=5, progress=False)
    module.save_checkpoint = real_save
    res["C"] = {"first": first["losses"], **rest, "writes": len(writes)}
    lap("C")
    # F: the hook in a hand-written "loss, backward, optimiser" loop (the fast path's step)
    res["F"] = manual_loop(logistic, xs, ys, resolve(DataParallel(same_noise=True)))
    lap("F")
    # G: a model with an enumerated discrete site local to the sharded plate (TraceEnum_ELBO)
    res["G"] = run_fit(mixture, xs, ys, "mixture", seed=6, num_steps=10, progress=False, distributed=same)
    lap("G")
    # D: what cannot be distributed, and errors on one rank only
    res["D_local"] = _error(lambda: run_fit(local_latent, xs, ys, num_steps=2, progress=False))
    res["D_unsharded"] = _error(lambda: run_fit(logistic, x, y, num_steps=2, progress=False))
    unknown = DataParallel(plates="rows")
    res["D_unknown_plate"] = _error(
        lambda: run_fit(logistic, xs, ys, num_steps=2, progress=False, distributed=unknown)
    )
    res["D_unplated"] = _error(lambda: run_fit(unplated, xs, ys, num_steps=2, progress=False))
    armed = {"fail": False, "exc": None}

    def flaky(x, y):
        if armed["fail"] and rank == 1:
            armed["fail"] = False
            raise armed["exc"]
        logistic(x, y)

    def arm(exc):
        def callback(step, loss):
            if step == 3:
                armed.update(fail=True, exc=exc)

        return callback

    bad_y = ys.clone()
    bad_y[0] = float("nan") if rank == 1 else bad_y[0]
    res["D_nan_shard"] = _error(lambda: run_fit(logistic, xs, bad_y, num_steps=2, progress=False))
    bug = RuntimeError("a bug in the model on rank 1")
    res["D_bug"] = _error(lambda: run_fit(flaky, xs, ys, seed=3, progress=False, callback=arm(bug)))
    nan = ValueError("Expected parameter logits to satisfy the constraint Real(), but found nan")
    res["D_diverge"] = run_fit(flaky, xs, ys, seed=3, num_steps=6, progress=False, callback=arm(nan))
    lap("D")
    torch.save(res, out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~14 s of work per rank; the rest: two fresh interpreters importing torch, pyro_nf
def test_two_gloo_processes_match_one_process_on_the_full_data(tmp_path):
    """Two ranks, each with half of the data, against one process with all of it.

    Equivalence design: in scenario A every rank seeds with the same ``seed``
    (``DataParallel(same_noise=True)``), so both ranks draw the same ``z`` from identical guides at
    every step; the mean of the rank losses, whose likelihoods are scaled by 2, is then the
    full-data loss at that ``z`` and the all-reduced gradient the full-data gradient. One process
    with the same seed draws the same ``z`` (one particle in both: the same effective batch), so
    losses and parameters agree to float64 round-off over 30 Adam steps. Scenario B (independent
    draws per rank, the default) checks the replicas stay bit-identical though their random streams
    differ; C that a resume by the group continues B exactly and only rank 0 writes; D the errors,
    raised on every rank (no hang); E repeats A for 8 steps with every other registered guide; F
    checks the gradient hook in a hand-written loss / ``backward()`` / optimiser loop (the shape of
    the fast path's step) against the same loop on the full data; G repeats A on a mixture whose
    discrete assignment, local to the sharded plate, is enumerated (``TraceEnum_ELBO``).
    """
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's pyro_nf
    procs = []
    for rank in range(2):
        log = open(tmp_path / f"rank{rank}.log", "w")
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, __file__, str(tmp_path)],
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    try:
        torch.set_default_dtype(torch.float64)
        x, y = data()
        ref = run_fit(logistic, x, y, seed=1, progress=False, distributed=False)
        ref_f = manual_loop(logistic, x, y)
        ref_g = run_fit(mixture, x, y, "mixture", seed=6, num_steps=10, progress=False)
        ref_e = {g: run_fit(logistic, x, y, g, num_steps=8, seed=4, progress=False) for g in GUIDES}
    finally:
        torch.set_default_dtype(torch.float32)
    deadline = time.monotonic() + 150
    for proc, log in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p, _ in procs:
                p.kill()
            pytest.fail("the 2-process fit did not finish in time")
        finally:
            log.close()
    logs = [(tmp_path / f"rank{r}.log").read_text() for r in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], logs
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert (r0["n_local"], r1["n_local"]) == (30, 30)

    # A: the group reproduces one process on the full data
    np.testing.assert_allclose(r0["A"]["losses"], ref["losses"], rtol=1e-9)
    assert set(r0["A"]["params"]) == set(ref["params"])
    for name, value in ref["params"].items():
        torch.testing.assert_close(r0["A"]["params"][name], value, rtol=1e-9, atol=1e-10)
        assert torch.equal(r0["A"]["params"][name], r1["A"]["params"][name]), name
    assert ref["losses"][0] - ref["losses"][-1] > 5.0  # it did learn something
    assert r0["A_named"]["losses"] == r0["A"]["losses"][:5]  # plates named: the same split

    # E: the same for every registered guide (the small AutoIAF is A)
    for g in GUIDES:
        np.testing.assert_allclose(r0["E"][g]["losses"], ref_e[g]["losses"], rtol=1e-9, err_msg=g)
        for name, value in ref_e[g]["params"].items():
            torch.testing.assert_close(r1["E"][g]["params"][name], value, rtol=1e-9, atol=1e-10)

    # F: the gradient hook outside fit(), in a loss-backward-step loop
    np.testing.assert_allclose(r1["F"]["losses"], ref_f["losses"], rtol=1e-9)
    for name, value in ref_f["params"].items():
        torch.testing.assert_close(r0["F"]["params"][name], value, rtol=1e-9, atol=1e-10)

    # G: enumerated local discrete site (its factor scaled with the observations)
    np.testing.assert_allclose(r0["G"]["losses"], ref_g["losses"], rtol=1e-9)
    assert r0["G"]["loss"] == "TraceEnum_ELBO"
    for name, value in ref_g["params"].items():
        torch.testing.assert_close(r1["G"]["params"][name], value, rtol=1e-9, atol=1e-10)

    # B: independent draws; replicas identical, losses the group's
    assert r0["B_next_draw"] != r1["B_next_draw"]
    assert r0["B"]["losses"] == r1["B"]["losses"]
    assert r0["B"]["losses"] != r0["A"]["losses"]
    for name, value in r0["B"]["params"].items():
        assert torch.equal(value, r1["B"]["params"][name]), name
    assert "fit: step 30/30" in logs[0] and "fit: step" not in logs[1]

    # C: resume by the group continues B bit for bit; rank 0 alone wrote the checkpoints
    for r in (r0, r1):
        assert r["C"]["first"] == r["B"]["losses"][:15]
        assert r["C"]["losses"] == r["B"]["losses"]
        for name, value in r["B"]["params"].items():
            assert torch.equal(r["C"]["params"][name], value), name
    assert r0["C"]["writes"] == 8 and r1["C"]["writes"] == 0  # every 5 steps + at the end of each fit

    # D: clear errors naming the site, on every rank (no hang)
    for r in (r0, r1):
        assert r["D_local"].startswith("FitInputError") and "'z'" in r["D_local"] and "'data'" in r["D_local"]
        assert "'y'" in r["D_unsharded"] and "same values on every rank" in r["D_unsharded"]
        assert "names plates ['rows'] the model does not have (its plates: ['data'])" in r["D_unknown_plate"]
        assert "'y'" in r["D_unplated"] and "no sharded plate" in r["D_unplated"]
        assert r["D_diverge"]["recoveries"] == 1 and len(r["D_diverge"]["losses"]) == 6
    assert (
        r1["D_nan_shard"].startswith("FitInputError: the model fails")
        and "'y' (1 NaN of 30)" in r1["D_nan_shard"]
    )
    assert r0["D_nan_shard"].startswith(
        "FitInputError: rank 1 failed (1 in all): FitInputError: the model fails"
    )
    assert r1["D_bug"].startswith("RuntimeError: a bug in the model on rank 1")
    assert r0["D_bug"].startswith("RuntimeError: 1 other rank(s) raised an error")
    for name, value in r0["D_diverge"]["params"].items():
        assert torch.equal(value, r1["D_diverge"]["params"][name]), name


def test_shard_cuts_contiguous_blocks_that_cover_the_data():
    x = torch.arange(23.0).reshape(23, 1)
    parts = [shard(x, rank=r, world_size=4) for r in range(4)]
    assert [len(p) for p in parts] == [6, 6, 6, 5]
    assert torch.equal(torch.cat(parts), x)
    cols = shard(np.arange(12).reshape(2, 6), dim=1, rank=1, world_size=3)
    assert cols.tolist() == [[2, 3], [8, 9]]
    nested = shard({"x": x, "y": (x[:, 0], x[:, 0] * 2)}, rank=3, world_size=4)
    assert nested["y"][1].tolist() == [36.0, 38.0, 40.0, 42.0, 44.0]


@pytest.mark.parametrize(
    "value, message",
    [
        (torch.zeros(3), "has 3 entries there, fewer than the 4 ranks"),
        (torch.tensor(1.0), "it has shape ()"),
        ({"x": torch.zeros(8), "n": 8}, "cannot shard data['n']: a int is not a tensor"),
        ({"x": torch.zeros(8), "z": torch.zeros(5)}, "different lengths along dimension 0 (data['x']: 8"),
    ],
)
def test_shard_names_what_cannot_be_split(value, message):
    with pytest.raises(ValueError) as info:
        shard(value, name="data", rank=0, world_size=4)
    assert message in str(info.value)


def test_only_sharded_observations_are_scaled_on_top_of_subsampling():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("prior_obs", dist.Normal(mu, 1.0), obs=torch.tensor(0.5))
        with pyro.plate("data", len(y), subsample_size=4) as idx:
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])

    with _ShardScale(frozenset({"data"}), 3.0):
        trace = poutine.trace(model).get_trace(torch.randn(12))
    assert trace.nodes["y"]["scale"] == 3.0 * 12 / 4  # world size x Pyro's N_local / B
    assert trace.nodes["mu"]["scale"] == 1.0 and trace.nodes["prior_obs"]["scale"] == 1.0


def test_distributed_fit_without_a_process_group_says_how_to_launch(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    x, y = data()
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        fit(logistic, AutoIAF(logistic), x.float(), y.float(), num_steps=1, distributed=True)
    with pytest.raises(ValueError, match="needs an initialised process group"):
        shard(x)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
