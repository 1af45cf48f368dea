r"""The shape of one fit: how far along it is, its learning rate, its STL switch-over and when it stops.

A fit has two budgets, ``num_steps`` and (optionally) ``time_budget`` seconds; its *progress* is the
larger fraction used,

.. math:: \pi_t = \min\Big(1, \max\Big(\frac{t}{N}, \frac{\text{elapsed}}{T}\Big)\Big),

so the recipe keeps its shape whichever budget binds first: under a time budget the learning rate
decays as :math:`\mathrm{lr}\cdot d^{\,\pi_t}` (``lr_decay`` :math:`= d`, the same curve as the
step-count decay when only ``num_steps`` binds) and flow guides switch to the sticking-the-landing
gradient (Roeder et al. 2017) once :math:`\pi_t \ge` ``stl_after``. The fit stops at ``num_steps``,
at the time budget (``stop_reason == "time_budget"``), or earlier when it has converged: by default
when the guide matches the posterior to within Monte Carlo noise (:class:`Converged`,
``stop_reason == "converged"``), or on an :class:`EarlyStop` plateau if asked for.

Example:
    >>> s = Schedule(num_steps=100, time_budget=None, stl_after=0.5)
    >>> s.progress(25), s.wants_stl(25), s.wants_stl(50)
    (0.25, False, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PATHS",
    "STL_MAX_SEQUENTIAL_DIM",
    "STOP_REASONS",
    "Converged",
    "EarlyStop",
    "FitResult",
    "Schedule",
    "switch_to_stl",
]

#: Every value ``FitResult.stop_reason`` can take.
STOP_REASONS = ("completed", "time_budget", "converged", "early_stop", "callback", "interrupted")
#: Every value ``FitResult.path`` can take: the fast ELBO (:mod:`pyro_nf.training.fast_elbo`) or
#: Pyro's ``SVI`` with the loss.
PATHS = ("fast", "trace_elbo")


class Schedule:
    """Progress of a fit against its step and time budgets (see the module docstring).

    Args:
        num_steps: the step budget (steps of this call and of earlier calls resumed from).
        time_budget: seconds this call may run (set-up included), or ``None``.
        stl_after: progress from which guides switch to STL (``None``: never switch).
    """

    def __init__(self, num_steps: int, time_budget: float | None, stl_after: float | None) -> None:
        if time_budget is not None and not (isinstance(time_budget, int | float) and time_budget > 0):
            raise ValueError(f"time_budget must be a positive number of seconds or None; got {time_budget!r}")
        if stl_after is not None and not (isinstance(stl_after, int | float) and 0 <= stl_after <= 1):
            raise ValueError(f"stl_after must be a number in [0, 1] or None; got {stl_after!r}")
        self.num_steps, self.time_budget, self.stl_after = num_steps, time_budget, stl_after
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the schedule started (the start of :func:`fit`)."""
        return time.perf_counter() - self.start

    def progress(self, step: int) -> float:
        """:math:`\\pi_t` after ``step`` steps."""
        p = step / self.num_steps
        if self.time_budget is not None:
            p = max(p, self.elapsed() / self.time_budget)
        return min(1.0, p)

    def out_of_time(self) -> bool:
        """Whether the time budget is spent."""
        return self.time_budget is not None and self.elapsed() >= self.time_budget

    def wants_stl(self, step: int) -> bool:
        """Whether the sticking-the-landing phase has begun."""
        return self.stl_after is not None and self.progress(step) >= self.stl_after


#: fit()'s STL phase skips guides with a sequential (D-pass) inverse above this latent dimension.
#: Their STL step scores each draw by inverting it: with 16 particles the step of a 4-layer AutoIAF
#: cost 4-6x its plain step at D = 10, 19x at D = 100 and 21x at D = 400 (one thread;
#: ``benchmarks/stl_cost.py``), and at D = 5000
#: the recorded inverse ran out of 23 GB.
STL_MAX_SEQUENTIAL_DIM: int = 16


def switch_to_stl(guide: Any) -> bool:
    """Turn on the guide's sticking-the-landing gradient if it has one it can use (every layer has an
    inverse) and it is off; return whether it was switched (the caller switches it back).

    Guides with a layer whose inverse is sequential (IAF) are switched only up to
    ``STL_MAX_SEQUENTIAL_DIM`` latent dimensions: beyond, the D-pass inverse makes each step an
    order of magnitude dearer. ``stl=True`` on the guide still turns STL on at any dimension.
    """
    if getattr(guide, "stl", True) or not getattr(guide, "supports_stl", False):
        return False
    layers = guide._layers() if hasattr(guide, "_layers") else []
    dim = getattr(guide, "latent_dim", 0)
    if dim > STL_MAX_SEQUENTIAL_DIM and any(getattr(f, "sequential_inverse", False) for f in layers):
        return False
    guide.stl = True
    return True


@dataclass(frozen=True)
class Converged:
    r"""Stop when the guide matches the posterior to within Monte Carlo noise (``fit()``'s default rule).

    Each step's loss is :math:`-\frac1K \sum_{k=1}^K \log w_k` with the log-weights
    :math:`\log w = \log p(x, z) - \log q(z)`, :math:`z \sim q`. Over a window of ``window`` steps in
    which the guide barely moves, :math:`K \cdot \widehat{\mathrm{Var}}(\text{loss})` estimates
    :math:`\mathrm{Var}_q[\log w]`, which is zero if and only if :math:`q = p(z \mid x)` (then
    :math:`\log w = \log p(x)` for every draw) and for a guide near the posterior is
    :math:`\approx 2\,\mathrm{KL}(q \,\|\, p)`. The fit stops (``stop_reason == "converged"``) once
    that estimate, checked every ``every`` steps after ``min_steps``, is below ``tol``: at the default
    0.005, :math:`\mathrm{KL}(q\|p) \lesssim 0.0025` nats, so nothing more is to be learnt. Movement of
    the guide inside the window only inflates the estimate, so the rule errs towards running on. Where
    the guide family cannot match the posterior (a funnel's neck, mean-field on a correlated posterior)
    or a subsampled plate adds likelihood noise, the estimate stays far above ``tol`` and those fits run
    to their step or time budget (measured: mean-field, full-rank and RealNVP for 3,000 steps on six of
    the reference posteriors: 16 of the 18 fits ended between 0.013 and 8.4; RealNVP crossed 0.005 on
    kilpisjarvi and arK, at k-hat 0.53 and 0.55). Near-zero variance is not a tail check: a guide can
    pass it with PSIS k-hat > 0.7.
    (A plateau of the ELBO is no such sign: a flow's ELBO on a funnel moves by ~0.01 nats per
    500 steps while its neck is still being filled, so :class:`EarlyStop` is opt-in.)

    Args:
        tol: variance of the log-weights below which the fit has converged.
        window: steps per variance estimate.
        every: steps between checks.
        min_steps: never stop before this many steps (of this fit and any resumed from).

    Example:
        >>> rule = Converged()
        >>> rule.should_stop([1.0 + 0.01 * (-1) ** i for i in range(400)], num_particles=16)
        True
        >>> rule.should_stop([1.0 + 0.1 * (-1) ** i for i in range(400)], num_particles=16)
        False
    """

    tol: float = 0.005
    window: int = 200
    every: int = 50
    min_steps: int = 200

    def __post_init__(self) -> None:
        if not self.tol >= 0 or self.window < 2 or self.every < 1 or self.min_steps < 0:
            raise ValueError(f"invalid {self!r}: need tol >= 0, window >= 2, every >= 1, min_steps >= 0")

    def should_stop(self, losses: list[float], num_particles: int = 1) -> bool:
        """Whether ``num_particles`` times the variance of the last ``window`` losses is below ``tol``."""
        n, w = len(losses), self.window
        if n < max(w, self.min_steps) or n % self.every:
            return False
        tail = losses[-w:]
        mean = sum(tail) / w
        var = sum((v - mean) ** 2 for v in tail) / (w - 1)
        return num_particles * var < self.tol


@dataclass
class EarlyStop:
    r"""Stop when the mean loss stops improving: an ELBO plateau (opt-in: ``fit(early_stop=True)``).

    After every step (once at least ``max(2 * window, min_steps)`` losses exist) the mean loss of the
    last ``window`` steps, :math:`\bar L_{new}`, is compared with the mean of the ``window`` steps
    before, :math:`\bar L_{old}`; the fit stops when
    :math:`\bar L_{old} - \bar L_{new} < \mathrm{rtol} \cdot \max(|\bar L_{new}|, 1)`, i.e. when the
    relative improvement over a window is below ``rtol`` (a loss that got worse counts as a plateau).

    Args:
        window: number of steps per averaging window.
        rtol: relative improvement below which the fit has converged.
        min_steps: never stop before this many steps.
    """

    window: int = 100
    rtol: float = 1e-3
    min_steps: int = 0

    def __post_init__(self) -> None:
        if self.window < 1 or not self.rtol >= 0 or self.min_steps < 0:
            raise ValueError(f"invalid {self!r}: need window >= 1, rtol >= 0, min_steps >= 0")

    def should_stop(self, losses: list[float], num_particles: int = 1) -> bool:
        """Whether the loss history has reached a plateau (``num_particles`` is not used)."""
        w = self.window
        if len(losses) < max(2 * w, self.min_steps):
            return False
        new = sum(losses[-w:]) / w
        old = sum(losses[-2 * w : -w]) / w
        return old - new < self.rtol * max(abs(new), 1.0)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        guide: the fitted guide (its parameters are the last verified-finite ones).
        losses: loss (negative ELBO estimate) of every step taken, in order, including the steps of
            earlier runs when resumed from a checkpoint.
        wall_seconds: wall-clock seconds this call spent (set-up included).
        num_steps: steps taken in total (``len(losses)``).
        stop_reason: one of :data:`STOP_REASONS`: ``"completed"`` (``num_steps`` reached),
            ``"time_budget"`` (``time_budget`` seconds spent), ``"converged"`` (the guide matches the
            posterior to within Monte Carlo noise, see :class:`Converged`), ``"early_stop"`` (plateau,
            see :class:`EarlyStop`), ``"callback"`` (the callback returned
            ``True``), ``"interrupted"`` (KeyboardInterrupt;
            the guide holds the parameters from before the interrupted step).
        num_recoveries: how often the divergence guard restored parameters.
        final_lr: learning rate at the end (lower than ``lr`` after decay or recoveries).
        recovery_steps: the step of each recovery.
        seed: the ``seed`` given to :func:`fit`.
        optimizer: optimizer name.
        loss: ELBO class name (e.g. ``"TraceEnum_ELBO"`` when chosen for enumeration).
        start_step: the step this call started from (non-zero after ``resume``).
        path: how the steps ran, one of :data:`PATHS`: ``"fast"`` (:mod:`pyro_nf.training.fast_elbo`:
            the same estimator as ``loss``, without per-step tracing) or ``"trace_elbo"`` (Pyro's
            ``SVI`` with ``loss``).
        path_reason: why the fast path did not run (empty when it did).
        stl_step: the step from which the sticking-the-landing gradient was used (``stl_after``),
            ``None`` when it was not switched on by the fit (off, or the guide has no inverse, or
            always on as with ``AutoMAF``).
        time_budget: the ``time_budget`` given to :func:`fit`.
        init: which start the guide took (``fit(init=)``): ``"laplace (...)"``, ``"own start (...)"``
            with the reason, or ``"continued ..."``.
        replay: on the fast path, whether the step was recorded once and replayed
            (:mod:`pyro_nf.training.replay`): ``"replayed (N trace(s), S s)"``, ``"eager (reason)"`` when
            the recording was refused, ``""`` when not attempted (short fits, Pyro's ``SVI``, data-parallel).
        num_clipped: steps whose gradient ``fit(grad_clip=)`` rescaled (this call's, and a resumed
            checkpoint's).
    """

    guide: Any
    losses: list[float]
    wall_seconds: float
    num_steps: int
    stop_reason: str
    num_recoveries: int
    final_lr: float
    recovery_steps: list[int] = field(default_factory=list)
    seed: int | None = None
    optimizer: str = "adam"
    loss: str = "Trace_ELBO"
    start_step: int = 0
    path: str = "trace_elbo"
    path_reason: str = ""
    stl_step: int | None = None
    time_budget: float | None = None
    init: str = ""
    replay: str = ""
    num_clipped: int = 0

    @property
    def elbo(self) -> float:
        """ELBO estimate: minus the mean loss of the last ``min(100, max(1, num_steps // 10))`` steps."""
        if not self.losses:
            return math.nan
        k = min(100, max(1, len(self.losses) // 10))
        return -sum(self.losses[-k:]) / k
