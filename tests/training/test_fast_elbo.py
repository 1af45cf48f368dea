"""Tests for the fast ELBO path (pyro_nf.fast_elbo) and its use in fit()."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta, AutoIAFNormal
from pyro.ops.indexing import Vindex

from pyro_nf import fit
from pyro_nf.guides import AutoIAF, AutoMAF
from pyro_nf.guides.registry import available_guides, make_guide
from pyro_nf.training._fused_optim import fused_step
from pyro_nf.training.fast_elbo import plan
from pyro_nf.transforms.made import MADE

N_OBS, BATCH = 30, 10


def constrained(y: torch.Tensor) -> None:
    """Several constrained sites (positive, simplex, unit interval), a plate-local latent and a
    subsampled likelihood (scaled by N / batch)."""
    tau = pyro.sample("tau", dist.HalfNormal(2.0))
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
    p = pyro.sample("p", dist.Beta(2.0, 3.0))
    with pyro.plate("groups", 4):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
    loc = theta[..., :1] + w[..., 0] * p  # (1,), or (K, 1) under K vectorised particles
    with pyro.plate("data", N_OBS, subsample_size=BATCH) as idx:
        pyro.sample("y", dist.Normal(loc, 1.0), obs=y[idx])


Y = torch.linspace(-2.0, 3.0, N_OBS)


def _perturbed_guide(name: str, **options):
    guide = make_guide(name, constrained, **options)
    guide(Y)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the identity init, so every layer matters
        for _, p in pyro.get_param_store().named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p))
    return guide


def _loss_and_grads(fn, params):
    for p in params:
        p.grad = None
    pyro.set_rng_seed(7)
    loss = fn()
    return float(loss), [p.grad.clone() for p in params]


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("name", available_guides() + ["iaf+stl"])
def test_fast_loss_and_gradients_equal_trace_elbo(name, k):
    options = {"stl": True} if name == "iaf+stl" else {}
    guide = _perturbed_guide(name.split("+")[0], **options)
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    elbo = Trace_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    ref_loss, ref_grads = _loss_and_grads(lambda: elbo.loss_and_grads(constrained, guide, Y), params)
    fast, reason = plan(constrained, guide, (Y,), {}, num_particles=k)
    assert fast is not None, reason

    def fast_loss():
        loss = fast.differentiable_loss()
        loss.backward()
        return loss

    loss, grads = _loss_and_grads(fast_loss, params)
    tol = 1e-4 if torch.get_default_dtype() == torch.float32 else 1e-10
    assert loss == pytest.approx(ref_loss, rel=tol)
    for p, g, r in zip(params, grads, ref_grads, strict=True):
        scale = float(r.abs().max()) + 1e-3
        assert torch.allclose(g, r, rtol=tol, atol=tol * scale), pyro.get_param_store().param_name(p)


def test_iaf_fast_path_runs_one_made_pass_per_layer(monkeypatch):
    guide = AutoIAF(constrained, num_flows=3, hidden_dims=(8,))
    guide(Y)
    fast, _ = plan(constrained, guide, (Y,), {}, num_particles=8)
    calls = []
    original = MADE.apply_weights
    monkeypatch.setattr(
        MADE, "apply_weights", lambda self, w, x: calls.append(x.shape) or original(self, w, x)
    )
    fast.differentiable_loss().backward()
    assert len(calls) == 3 and all(s[0] == 8 for s in calls)  # log q from the cached log-dets


@config_enumerate
def mixture(y):
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        assign = pyro.sample("assign", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("y", dist.Normal(Vindex(locs)[..., assign], 1.0), obs=y)


def local_latents(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y), subsample_size=5) as idx:
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y[idx])


def dynamic(y):
    n = int(torch.randint(1, 3, ()))
    for i in range(n):
        pyro.sample(f"x{i}", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(0.0, 1.0), obs=y[0])


@pytest.mark.parametrize(
    "model, guide_fn, options, reason",
    [
        (mixture, lambda m: make_guide("diagonal", m), {}, "'assign' is enumerated"),
        (local_latents, lambda m: make_guide("meanfield", m), {}, "local to the subsampled plate 'data'"),
        (constrained, AutoDelta, {}, "is not an AutoContinuous"),
        (constrained, lambda m: make_guide("iaf", m), {"loss": "Trace_ELBO"}, "loss=Trace_ELBO"),
        (
            constrained,
            lambda m: make_guide("iaf", m),
            {"num_particles": 2, "vectorize_particles": False},
            "vectorize_particles=False",
        ),
        (constrained, lambda m: make_guide("iaf", m), {"fast": False}, "fast=False"),
    ],
    ids=["enumeration", "subsampled-local", "unsupported-guide", "loss-given", "unvectorised", "off"],
)
def test_fit_falls_back_to_trace_elbo_and_says_why(model, guide_fn, options, reason, capfd):
    y = Y
    result = fit(model, guide_fn(model), y, num_steps=10, seed=0, **options)
    assert result.path == "trace_elbo" and reason in result.path_reason
    assert f"path trace_elbo ({result.path_reason})" in capfd.readouterr().err
    if options.get("fast") is None:
        with pytest.raises(ValueError, match="fast path does not apply: .*" + reason[:8]):
            fit(model, guide_fn(model), y, num_steps=1, fast=True, progress=False, **options)


def test_dynamic_structure_is_detected():
    guide = AutoIAFNormal(dynamic)
    for seed in range(20):
        pyro.set_rng_seed(seed)
        fast, reason = plan(dynamic, guide, (Y,), {}, num_particles=1)
        if fast is None:
            assert reason.startswith("dynamic structure")
            return
    pytest.fail("two traces of a model with a random number of sites never differed")


@pytest.mark.parametrize(
    "make",
    [lambda m: AutoMAF(m, num_flows=2, hidden_dims=(8,)), lambda m: AutoIAFNormal(m, hidden_dim=[16])],
    ids=["AutoMAF", "AutoIAFNormal"],
)
def test_fit_uses_the_fast_path_and_tracks_trace_elbo(make, capfd):
    fast_fit = fit(constrained, make(constrained), Y, num_steps=20, seed=0, num_particles=3)
    assert fast_fit.path == "fast" and fast_fit.path_reason == ""
    assert "| path fast" in capfd.readouterr().err
    pyro.clear_param_store()
    slow_fit = fit(
        constrained, make(constrained), Y, num_steps=20, seed=0, num_particles=3, fast=False, progress=False
    )
    # same noise, estimator and updates (each parameter tensor stepped once, even under two names)
    assert fast_fit.losses == pytest.approx(slow_fit.losses, rel=1e-3)


def test_fused_adam_step_matches_pyros_loop_with_schedule_and_reset():
    def run(fused: bool):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s)) for s in [(3,), (4, 5), (7,)]]
        optim = pyro.optim.ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05}, "gamma": 0.9}
        )
        gen = torch.Generator().manual_seed(1)
        for i in range(12):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            fused_step(optim, ps) if fused else optim(ps)
            optim.step()
            if i == 5:  # what the divergence guard does
                for obj in optim.optim_objs.values():
                    obj.optimizer.state.clear()
        return ps

    for a, b in zip(run(True), run(False), strict=True):  # the fused kernel rounds differently
        assert torch.allclose(a, b, rtol=0.0, atol=1e-6)


def test_default_hidden_width_is_capped_for_large_d():
    assert AutoIAF.default_hidden_dims(10) == (32, 32)
    assert AutoIAF.default_hidden_dims(200) == (400, 400)
    assert AutoMAF.default_hidden_dims(5000) == (512, 512)


def test_compact_guard_keeps_two_buffers_and_restores_the_last_verified_step():
    from pyro.optim import Adam

    from pyro_nf.training.guard import DivergenceGuard

    params = {"a": torch.nn.Parameter(torch.zeros(5)), "b": torch.nn.Parameter(torch.ones(2, 3))}
    guard = DivergenceGuard(params, max_recoveries=3, compact_bytes=0)
    assert guard.compact and len(guard.levels) == 1
    buffers = set()
    for step in range(1, 21):
        guard.before_step()
        guard.verified()
        with torch.no_grad():
            for p in params.values():
                p.add_(1.0)
        guard.completed(step)
        snaps = [guard.initial, *guard.levels, guard.candidate, guard.spare]
        buffers |= {s["a"].data_ptr() for s in snaps if s is not None}
    assert len(buffers) == 2  # two preallocated buffers, reused: no per-step allocation
    last_verified = params["a"].detach() - 1.0
    guard.before_step()
    with torch.no_grad():
        params["a"].fill_(float("nan"))  # the step diverged
    guard.recover(20, Adam({"lr": 0.1}), 0.1, None, None, (), {})
    assert torch.equal(params["a"].detach(), last_verified)  # the start of the last verified step
    state = guard.state_dict()
    fresh = DivergenceGuard(params, max_recoveries=3, compact_bytes=0)
    fresh.load_state_dict(state)
    assert fresh.levels[0] is fresh.initial and len(fresh.levels) == 1


@pytest.mark.parametrize("compact", [True, False])
def test_guard_on_flat_parameters_copies_one_buffer_and_rolls_back_to_finite(compact):
    from pyro.optim import Adam

    from pyro_nf.training.guard import DivergenceGuard

    flat = torch.zeros(11)
    a, b = torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.ones(2, 3))
    a.data, b.data = flat[:5], flat[5:].view(2, 3)  # what the fused Adam does
    params = {"a": a, "b": b, "alias": a}  # one tensor under two names
    make = lambda: DivergenceGuard(  # noqa: E731
        params, 3, compact_bytes=0 if compact else None, flat=lambda: flat, order=[a, b]
    )
    guard = make()
    for step in range(1, 21):
        guard.before_step()
        guard.verified()
        with torch.no_grad():
            flat.add_(1.0)
        guard.completed(step)
    assert isinstance(guard.candidate, torch.Tensor) and guard.candidate.shape == (11,)
    last_verified = flat - 1.0
    guard.before_step()
    with torch.no_grad():
        b.fill_(float("inf"))  # the step diverged
    assert not guard.finite()
    guard.recover(20, Adam({"lr": 0.1}), 0.1, None, None, (), {})
    assert torch.equal(flat, last_verified) and guard.finite()
    state = guard.state_dict()  # per-name tensors in checkpoints, as before
    assert set(state["levels"][0]) == {"a", "b", "alias"}
    assert torch.equal(state["levels"][0]["b"], last_verified[5:].view(2, 3))
    with torch.no_grad():
        flat.fill_(float("nan"))
    fresh = make()
    fresh.load_state_dict(state)
    fresh.recover(21, Adam({"lr": 0.1}), 0.1, None, None, (), {})  # the 2nd recovery: the ladder's level 1
    older = state["levels"][0 if compact else 1]
    assert torch.equal(a.detach(), older["a"]) and torch.equal(b.detach(), older["b"]) and guard.finite()
    assert compact or float(a[0]) == 15.0  # promoted at step 16, 8 steps back
