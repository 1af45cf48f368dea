"""Timing helpers of ``step_time.py``: marginal ms/step of ``pyro_nf.fit`` (two fits differenced, the
replayed step's trace subtracted), of a step function, interleaved rounds, medians and ratios."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import eager_loop
import pyro
from pyro.infer import SVI, Trace_ELBO

import pyro_nf
from pyro_nf.training import replay


class _Recorded(replay.ReplayedGradient):
    """fit()'s replayed step, remembered so the benchmark can report its trace time."""

    last: replay.ReplayedGradient | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _Recorded.last = self


replay.ReplayedGradient = _Recorded


class FitRunner:
    """Marginal ms/step of ``pyro_nf.fit`` on one guide: two fits, n0 and n0 + S steps.

    ``replay_min_steps``: ``pyro_nf.training.replay.MIN_STEPS`` during these fits (default: as set by
    ``--replay-min-steps``; 0: the short
    differenced fits replay their step as a long fit does; the trace cancels in the difference and
    is reported separately as ``trace_s``; a huge value: the eager fast path)."""

    def __init__(self, model, guide, n0: int = 2, replay_min_steps: int | None = None, **options) -> None:
        self.model, self.guide, self.n0, self.options = model, guide, n0, options
        self.replay_min_steps = replay_min_steps
        self.trace_s, self.replay_reason = float("nan"), ""
        result = self._fit(n0)[0]
        self.path, self.reason = result.path, result.path_reason

    def _fit(self, n: int) -> tuple:
        """One fit of ``n`` steps: (result, wall seconds less the trace's)."""
        saved = replay.MIN_STEPS
        if self.replay_min_steps is not None:
            replay.MIN_STEPS = self.replay_min_steps
        _Recorded.last = None
        try:
            result = pyro_nf.fit(self.model, self.guide, num_steps=n, progress=False, **self.options)
        finally:
            replay.MIN_STEPS = saved
        gc.collect()  # a fit leaves reference cycles holding its optimizer state (GBs at D = 5000)
        trace = 0.0
        if _Recorded.last is not None:
            trace = _Recorded.last.trace_seconds
            self.trace_s, self.replay_reason = trace, _Recorded.last.reason
        return result, result.wall_seconds - trace

    def __call__(self, steps: int) -> float:
        a = self._fit(self.n0)[1]
        b = self._fit(self.n0 + steps)[1]
        return (b - a) / steps * 1e3


class StepRunner:
    """ms/step of a step function called directly."""

    def __init__(self, step: Callable[[], object]) -> None:
        self.step = step
        step()
        self.path, self.reason = "", ""

    def __call__(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - t0) / steps * 1e3


def svi_runner(model, guide, k: int = 1) -> StepRunner:
    svi = SVI(
        model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO(num_particles=k, vectorize_particles=True)
    )
    return StepRunner(svi.step)


def eager_runner(log_joint, dim: int, hidden, flows: int, skip: bool, k: int = 1) -> StepRunner:
    return StepRunner(eager_loop.make_step(eager_loop.EagerIAF(dim, hidden, flows, skip), log_joint, k))


def interleave(runners: dict[str, Callable[[int], float]], rounds: int, steps: int) -> dict:
    runs: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            runs[name].append(run(steps))
    return runs


def ratio(runs: dict, a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))


def med(runs: dict, a: str) -> float:
    return statistics.median(runs[a])


def fmt(v: float, nd: int = 2) -> str:
    return "n/a" if v != v else f"{v:.{nd}f}"
