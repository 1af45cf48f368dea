"""Tests for fit()'s adaptive gradient-norm clipping (pyro_nf.training.clipping)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_nf
from pyro_nf import make_guide
from pyro_nf.training import fit
from pyro_nf.training.clipping import AdaptiveClip, GradClipper


def funnel() -> None:
    log_scale = pyro.sample("log_scale", dist.Normal(0.0, 3.0))
    with pyro.plate("d", 4):
        pyro.sample("x", dist.Normal(0.0, torch.exp(log_scale / 2)))


def _clipper(factor=3.0, window=5, min_history=3):
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(2, 2))
    return GradClipper(AdaptiveClip(factor=factor, window=window, min_history=min_history), [p, q]), p, q


def _set(p, q, scale):
    p.grad = torch.tensor([1.0, -2.0, 2.0]) * scale  # norm 3 * scale
    q.grad = torch.tensor([[0.0, 4.0], [0.0, 0.0]]) * scale  # norm 4 * scale: total 5 * scale


def test_a_gradient_above_factor_times_the_median_norm_is_rescaled_to_it_keeping_its_direction():
    clip, p, q = _clipper(factor=3.0)
    for scale in (1.0, 2.0, 1.0):  # norms 5, 10, 5: median 5
        _set(p, q, scale)
        assert clip() is False
    _set(p, q, 100.0)  # norm 500 > 3 * 5
    assert clip() is True
    total = math.sqrt(float(p.grad.square().sum() + q.grad.square().sum()))
    assert total == pytest.approx(15.0, rel=1e-6)
    torch.testing.assert_close(p.grad, torch.tensor([1.0, -2.0, 2.0]) * 3.0)  # same direction
    torch.testing.assert_close(q.grad, torch.tensor([[0.0, 4.0], [0.0, 0.0]]) * 3.0)
    assert clip.num_clipped == 1
    assert list(clip.history) == [5.0, 10.0, 5.0, 500.0]  # the norm before clipping


def test_no_clipping_below_the_threshold_nor_before_min_history():
    clip, p, q = _clipper(factor=3.0, min_history=3)
    _set(p, q, 1.0)
    clip()
    _set(p, q, 1000.0)  # only one norm known: not clipped
    assert clip() is False
    assert p.grad[1] == -2000.0
    clip, p, q = _clipper(factor=3.0)
    for _ in range(3):
        _set(p, q, 1.0)
        clip()
    _set(p, q, 2.9)  # norm 14.5 < 15
    assert clip() is False
    assert p.grad[1] == pytest.approx(-5.8)


def test_the_window_forgets_old_norms_and_non_finite_norms_are_left_to_the_guard():
    clip, p, q = _clipper(factor=3.0, window=3, min_history=3)
    for scale in (100.0, 100.0, 100.0, 1.0, 1.0, 1.0):
        _set(p, q, scale)
        clip()
    assert list(clip.history) == [5.0, 5.0, 5.0]
    _set(p, q, 1.0)
    p.grad[0] = math.nan
    assert clip() is False
    assert list(clip.history) == [5.0, 5.0, 5.0] and math.isnan(p.grad[0])
    state = clip.state_dict()
    fresh, _, _ = _clipper(factor=3.0, window=3, min_history=3)
    fresh.load_state_dict(state)
    assert list(fresh.history) == [5.0, 5.0, 5.0] and fresh.num_clipped == clip.num_clipped


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"factor": 1.0}, "factor"),
        ({"factor": math.inf}, "factor"),
        ({"factor": True}, "factor"),
        ({"window": 0}, "window"),
        ({"min_history": 2.5}, "min_history"),
        ({"window": 10, "min_history": 11}, "min_history"),
    ],
)
def test_bad_clip_settings_are_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveClip(**kwargs)


def test_fit_refuses_a_grad_clip_of_the_wrong_type():
    pyro.clear_param_store()
    guide = make_guide("realnvp", funnel)
    with pytest.raises(ValueError, match="grad_clip"):
        fit(funnel, guide, num_steps=5, progress=False, grad_clip=3.0)


@pytest.mark.parametrize("fast", [None, False])
def test_fit_clips_by_default_on_both_paths_and_not_when_switched_off(fast):
    counts = {}
    for clip in ("default", None):
        pyro.clear_param_store()
        guide = make_guide("realnvp", funnel)
        opts = {} if clip == "default" else {"grad_clip": clip}
        result = fit(funnel, guide, num_steps=300, seed=0, progress=False, fast=fast, early_stop=None, **opts)
        assert result.path == ("fast" if fast is None else "trace_elbo")
        counts[clip] = result.num_clipped
    assert counts[None] == 0
    assert 0 < counts["default"] < 300  # the funnel's tails give some outlying gradients, not all


def test_one_outlying_gradient_moves_a_clipped_fit_far_less_than_an_unclipped_one():
    """At step 200 a single step's log density gets a steep extra term (its gradient ~1e4 times the
    usual): unclipped, Adam carries every parameter tens of steps along it; clipped, the fit barely
    notices. The move is measured over the 30 steps after the outlier."""
    spike = torch.zeros(())

    def model() -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.factor("outlier", -spike * (z - 5.0).square().sum(-1))

    moves = {}
    for clip in ("default", None):
        pyro.clear_param_store()
        guide = make_guide("realnvp", model)
        saved: dict = {}

        def at(step, loss, saved=saved):
            spike.fill_(1e4 if step == 199 else 0.0)  # the 200th step sees the outlier
            if step in (199, 230):
                flat = torch.cat([p.detach().reshape(-1) for p in pyro.get_param_store().values()])
                saved[step] = flat.clone()

        opts = {} if clip == "default" else {"grad_clip": None}
        opts.update(progress=False, early_stop=None, callback=at)
        result = fit(model, guide, num_steps=231, seed=1, **opts)
        assert math.isfinite(result.losses[-1])
        moves[clip] = float((saved[230] - saved[199]).norm())
    assert moves["default"] < 0.3 * moves[None], moves


def test_the_clip_count_reaches_the_inference_data():
    pyro.clear_param_store()
    guide = make_guide("realnvp", funnel)
    result = fit(funnel, guide, num_steps=200, seed=0, progress=False, early_stop=None)
    idata = pyro_nf.to_inference_data(funnel, guide, num_samples=10, fit=result)
    assert idata.posterior.attrs["num_clipped"] == result.num_clipped > 0
