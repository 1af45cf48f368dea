"""Tests for the replayed fast-path step (pyro_nf.training.replay, its compiled graph) and the flat Adam."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_nf import fit
from pyro_nf.guides import AutoIAF
from pyro_nf.guides.registry import make_guide
from pyro_nf.training import replay
from pyro_nf.training.fast_elbo import plan

N_OBS, BATCH = 30, 10
Y = torch.linspace(-2.0, 3.0, N_OBS)


def constrained(y: torch.Tensor) -> None:
    """Constrained sites, a plate-local latent and a subsampled likelihood (fresh indices each step)."""
    tau = pyro.sample("tau", dist.HalfNormal(2.0))
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("groups", 4):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
    loc = theta[..., :1] + w[..., 0]  # (1,), or (K, 1) under K vectorised particles
    with pyro.plate("data", N_OBS, subsample_size=BATCH) as idx:
        pyro.sample("y", dist.Normal(loc, 1.0), obs=y[idx])


def small(y: torch.Tensor) -> None:
    x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    pyro.sample("y", dist.Normal(x.sum(-1, keepdim=True), 1.0).to_event(1), obs=y[:1])


def _fit(name: str, replayed: bool, monkeypatch) -> tuple[list[float], list[torch.Tensor]]:
    pyro.clear_param_store()
    monkeypatch.setattr(replay, "MIN_STEPS", 0 if replayed else 10**9)
    model = small if name == "iaf+stl" else constrained
    guide = (
        make_guide("meanfield", model)
        if name == "meanfield"
        else AutoIAF(model, num_flows=2, hidden_dims=(8,))
    )
    result = fit(
        model,
        guide,
        Y,
        num_steps=10,
        num_particles=3,
        stl_after=0.5 if name == "iaf+stl" else None,
        seed=0,
        progress=False,
    )
    params = [p.detach().clone() for _, p in sorted(pyro.get_param_store().named_parameters())]
    return result.losses, params


@pytest.mark.parametrize("name", ["iaf", "meanfield", "iaf+stl"])
def test_replayed_fit_is_bit_identical_to_the_eager_fit(name, monkeypatch):
    made: list[replay.ReplayedGradient] = []

    class Recording(replay.ReplayedGradient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(replay, "ReplayedGradient", Recording)
    eager_losses, eager_params = _fit(name, False, monkeypatch)
    assert not made
    losses, params = _fit(name, True, monkeypatch)
    assert len(made) == 1 and made[0].replaying and made[0].reason == ""
    # with stl_after the flow switches to the sticking-the-landing gradient half-way: a second trace
    assert made[0].num_traces == (2 if name == "iaf+stl" else 1)
    assert losses == eager_losses  # same noise (subsample indices included), same bits
    for a, b in zip(params, eager_params, strict=True):
        assert torch.equal(a, b)


def _replayed(model, *args):
    pyro.clear_param_store()
    guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
    guide(*args)
    fast, reason = plan(model, guide, args, {})
    assert reason == ""
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    return replay.ReplayedGradient(fast, params), params


def test_replay_refuses_randomness_outside_torch_and_runs_eagerly():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        noise = torch.as_tensor(np.random.normal(size=2), dtype=x.dtype)  # frozen by a trace
        pyro.sample("y", dist.Normal(x + noise, 1.0).to_event(1), obs=torch.zeros(2))

    step, params = _replayed(model)
    loss = step()
    assert not step.replaying and "differs from the eager one" in step.reason
    assert np.isfinite(loss) and all(p.grad is not None for p in params)
    step()
    assert step.num_traces == 1  # refused once, not traced again


def test_replay_refuses_a_branch_on_a_tensor_value():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        scale = 1.0 if float(x.sum()) > 0 else 2.0  # a data-dependent Python branch
        pyro.sample("y", dist.Normal(x, scale).to_event(1), obs=torch.zeros(2))

    step, _ = _replayed(model)
    step()
    assert not step.replaying and "_local_scalar_dense" in step.reason


def _grads(ps, gen, masks):
    """Random gradients with exact zeros (MADE's masks) and tiny values whose squares underflow."""
    for p, mask in zip(ps, masks, strict=True):
        size = 10.0 ** torch.randint(-30, 3, p.shape, generator=gen)
        p.grad = torch.where(mask, torch.randn(p.shape, generator=gen) * size, torch.zeros(()))


def test_flat_adam_is_torchs_fused_adam_on_the_parameters_flat_buffer():
    from pyro_nf.training._fused_optim import flat_parameters, fused_step

    torch.manual_seed(0)
    shapes = [(3,), (17, 5), (1,), (33,)]
    ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    optim = pyro.optim.Adam({"lr": 0.05, "betas": (0.8, 0.99)})
    gen = torch.Generator().manual_seed(1)
    masks = [torch.rand(p.shape, generator=gen) < 0.5 for p in ps]
    _grads(ps, gen, masks)
    fused_step(optim, ps)  # the first step creates Pyro's per-parameter state (its own loop)
    # the reference: torch.optim.Adam(fused=True) on one flat parameter, from the same state
    states = [optim.optim_objs[p].state[p] for p in ps]
    ref = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in ps]))
    ref_opt = torch.optim.Adam([ref], lr=0.05, betas=(0.8, 0.99), fused=True)
    ref_opt.state[ref] = {
        "step": torch.tensor(1.0),
        "exp_avg": torch.cat([st["exp_avg"].reshape(-1) for st in states]),
        "exp_avg_sq": torch.cat([st["exp_avg_sq"].reshape(-1) for st in states]),
    }
    for _ in range(8):
        _grads(ps, gen, masks)
        ref.grad = torch.cat([p.grad.reshape(-1) for p in ps])
        fused_step(optim, ps)
        ref_opt.step()
        flat = flat_parameters(optim, ps)
        assert flat is not None and torch.equal(flat, ref.detach())  # the same bits
    # the parameters are views of that buffer, back to back, and so are the optimizer's moments
    assert [p.data_ptr() for p in ps] == [flat.data_ptr() + 4 * o for o in (0, 3, 88, 89)]
    state = optim.optim_objs[ps[1]].state[ps[1]]
    assert state["exp_avg"].data_ptr() == optim._pyro_nf_flat.avg.data_ptr() + 3 * 4


def test_flat_adam_stays_close_to_pyros_loop_over_many_steps_and_survives_a_reset():
    from pyro_nf.training._fused_optim import fused_step

    def run(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s)) for s in [(3,), (17, 5), (1,), (33,)]]
        optim = pyro.optim.Adam({"lr": 0.01, "betas": (0.8, 0.99)})
        gen = torch.Generator().manual_seed(1)
        masks = [torch.rand(p.shape, generator=gen) < 0.5 for p in ps]
        for i in range(300):
            _grads(ps, gen, masks)
            fused_step(optim, ps) if fused else optim(ps)
            if i == 150:  # what the divergence guard does: the buffers are rebuilt on the same storage
                ptr = ps[0].data_ptr()
                for obj in optim.optim_objs.values():
                    obj.state.clear()
        if fused:
            assert ps[0].data_ptr() == ptr and optim._pyro_nf_flat.flat is not None
        return ps

    fused, loop = run(True), run(False)
    torch.manual_seed(0)
    start = [torch.randn(s) for s in [(3,), (17, 5), (1,), (33,)]]
    assert max(float((a.detach() - b).abs().max()) for a, b in zip(loop, start, strict=True)) > 0.3
    for a, b in zip(fused, loop, strict=True):
        # one rounding apart per update (the fused kernel orders Adam's arithmetic differently)
        assert torch.allclose(a, b, rtol=0.0, atol=1e-6), float((a - b).abs().max())  # read: <= 1.2e-7


def test_fit_result_says_whether_the_step_was_replayed(monkeypatch):
    pyro.clear_param_store()
    monkeypatch.setattr(replay, "MIN_STEPS", 0)
    guide = AutoIAF(small, num_flows=2, hidden_dims=(8,))
    r = fit(small, guide, Y, num_steps=5, num_particles=2, stl_after=None, seed=0, progress=False)
    assert r.path == "fast" and r.replay.startswith("replayed (1 trace(s)")
    monkeypatch.setattr(replay, "MIN_STEPS", 10**9)
    r = fit(small, guide, Y, num_steps=10, num_particles=2, stl_after=None, seed=0, progress=False)
    assert r.replay == ""


def test_progress_output_says_whether_the_step_is_replayed_and_why_not(monkeypatch, capfd):
    import io
    import sys

    pyro.clear_param_store()
    guide = AutoIAF(small, num_flows=2, hidden_dims=(8,))
    options = {"num_particles": 2, "stl_after": None, "seed": 0}
    monkeypatch.setattr(replay, "MIN_STEPS", 0)
    fit(small, guide, Y, num_steps=10, **options)  # stderr is not a terminal: one line per step here
    lines = capfd.readouterr().err.splitlines()
    assert "path fast; step replayed (1 trace(s)" in lines[0]
    assert lines[1].endswith("| path fast, step replayed")
    fit(small, guide, Y, num_steps=10, **{**options, "stl_after": 0.5})  # re-traced at the STL switch
    lines = capfd.readouterr().err.splitlines()
    assert all(line.endswith("| path fast, step replayed") for line in lines[1:]), lines  # said once
    monkeypatch.setattr(replay, "MIN_STEPS", 10**9)
    fit(small, guide, Y, num_steps=10, **options)
    first = capfd.readouterr().err.splitlines()[0]
    assert first.endswith("path fast; step eager (fits under 1000000000 steps / 30 s are not replayed)")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(replay, "MIN_STEPS", 0)
    monkeypatch.setattr(sys, "stderr", Terminal())
    fit(small, guide, Y, num_steps=10, **options)
    assert "path=fast/replayed" in sys.stderr.getvalue()  # the tqdm bar


def test_a_replayed_and_continued_fit_leaves_no_reference_cycle_holding_tensors(monkeypatch):
    """fx graphs are reference cycles: their nodes' traced values (every intermediate of a step) and
    the second fit's patched optimizer would stay alive until the cyclic collector ran (GBs at D = 5000)."""
    import gc

    pyro.clear_param_store()
    monkeypatch.setattr(replay, "MIN_STEPS", 0)
    guide = AutoIAF(small, num_flows=2, hidden_dims=(64,))
    options = {"num_steps": 3, "num_particles": 2, "stl_after": None, "seed": 0, "progress": False}
    fit(small, guide, Y, **options)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert fit(small, guide, Y, **options).replay.startswith("replayed")  # continues the moments
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, torch.Tensor) and o.numel() >= 64]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert leaked == []
