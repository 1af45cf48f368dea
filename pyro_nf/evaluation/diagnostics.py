r"""Did variational inference work? Importance weights, PSIS Pareto k-hat, ESS and the IW-ELBO.

For draws :math:`z_s \sim q(z)`, :math:`s = 1..S`, the importance log weights are

.. math::
    \log w_s = \log p(x, z_s) - \log q(z_s).

Their mean is the ELBO, :math:`\mathcal{L} = \frac1S \sum_s \log w_s`, and their log-mean-exp is the
importance-weighted ELBO (Burda et al. 2016), an estimate of the log evidence that is a lower bound
in expectation and tightens as :math:`S` grows:

.. math::
    \hat{\mathcal{L}}_{\mathrm{IW}} = \log \frac1S \sum_s w_s \;\le\; \log p(x),
    \qquad \mathrm{KL}(q \,\|\, p) = \log p(x) - \mathcal{L} \;\gtrsim\; \hat{\mathcal{L}}_{\mathrm{IW}}
    - \mathcal{L}.

Pareto-smoothed importance sampling (PSIS; Vehtari et al. 2024) fits a generalised Pareto
distribution to the largest :math:`M = \lceil \min(S/5, 3\sqrt{S}) \rceil` weights; its shape
:math:`\hat k` says how heavy the weights' tail is, i.e. how much posterior mass the guide misses.
Yao, Vehtari, Simpson & Gelman (2018), "Yes, but Did It Work?: Evaluating Variational Inference"
(arXiv:1802.02538): :math:`\hat k < 0.5` the guide is good; :math:`0.5 \le \hat k \le 0.7` usable
after PSIS correction; :math:`\hat k > 0.7` unreliable. The PSIS step is ArviZ's ``psislw``.

This module returns numbers; :mod:`pyro_nf.evaluation.bridge` builds ``InferenceData``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np

from pyro_nf._util import check_positive_int
from pyro_nf.evaluation import draws as _traces
from pyro_nf.evaluation.batches import iter_batches

__all__ = ["Diagnosis", "diagnose", "importance_log_weights", "psis", "verdict"]


def _logsumexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.exp(x - m).sum()))


KHAT_GOOD = 0.5
KHAT_USABLE = 0.7
#: fewest draws whose Pareto tail, ceil(min(S / 5, 3 sqrt(S))), has the 5 weights a k-hat fit needs
MIN_KHAT_DRAWS = 21
#: registry and class names of the flow guides (their "unreliable" advice is a richer flow)
_FLOW_GUIDES = frozenset({"planar", "iaf", "maf", "autoplanar", "autoiaf", "automaf"})


def psis(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    r"""Pareto-smooth importance log weights with ArviZ's ``psislw`` (iid draws, ``reff=1``).

    Args:
        log_weights: Shape ``(S,)`` raw log weights :math:`\log p(x, z_s) - \log q(z_s)`.

    Returns:
        The smoothed log weights normalised so that :math:`\sum_s \tilde w_s = 1`, and
        :math:`\hat k` (``nan`` below :data:`MIN_KHAT_DRAWS` draws, ``inf`` when the tail is too
        short to fit, ``-inf`` when all weights are equal, i.e. the guide is exact).

    Raises:
        ValueError: If any log weight is NaN.

    Example:
        >>> lw, k = psis(np.random.default_rng(0).normal(size=1000))
        >>> round(float(np.exp(lw).sum()), 6), k < 0.5
        (1.0, True)
    """
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if np.isnan(lw).any():
        raise ValueError(
            f"{int(np.isnan(lw).sum())} of {lw.size} log weights are NaN: the model "
            "or guide produced an invalid density for some draws"
        )
    if lw.size < MIN_KHAT_DRAWS:  # no tail to fit: k-hat is unknown (never "good")
        finite = np.isfinite(lw).any()
        norm = lw - _logsumexp(lw) if finite else np.full(lw.size, -math.log(max(lw.size, 1)))
        return norm, math.nan
    if np.ptp(lw) == 0.0:
        # Constant weights (q proportional to p): bounded, the limit k -> -inf; nothing to fit.
        return np.full(lw.size, -math.log(lw.size)), -math.inf
    smoothed, khat = az.psislw(lw, reff=1.0)
    return np.asarray(smoothed), float(khat)


def khat_band(khat: float) -> str:
    r"""The one reading of a Pareto k-hat (Yao et al. 2018) that the verdict, the report and the
    plots share: ``"good"`` (:math:`\hat k < 0.5`), ``"usable"`` (:math:`0.5 \le \hat k \le 0.7`),
    ``"unreliable"`` (:math:`\hat k > 0.7`) or ``"unknown"`` (NaN or :math:`+\infty`: too few draws).

    Example:
        >>> [khat_band(k) for k in (0.2, 0.7, 0.71, float("nan"))]
        ['good', 'usable', 'unreliable', 'unknown']
    """
    if math.isnan(khat) or khat == math.inf:
        return "unknown"
    if khat < KHAT_GOOD:
        return "good"
    if khat <= KHAT_USABLE:
        return "usable"
    return "unreliable"


def importance_ess(log_weights: np.ndarray) -> float:
    r"""Importance-sampling effective sample size :math:`1 / \sum_s \tilde w_s^2` of log weights
    (normalised here; pass PSIS-smoothed ones for the smoothed ESS).

    Example:
        >>> round(importance_ess(np.zeros(100)), 6)
        100.0
    """
    lw = np.asarray(log_weights, dtype=np.float64).ravel()
    lw = lw - _logsumexp(lw)
    return float(1.0 / np.exp(_logsumexp(2.0 * lw)))


def verdict(khat: float) -> str:
    """Yao et al.'s (2018) reading of a Pareto k-hat, in words.

    Example:
        >>> verdict(0.3).split(":")[0]
        'good'
    """
    band = khat_band(khat)
    if band == "unknown":
        return "unknown: too few draws in the tail to estimate k-hat; draw more samples (num_samples)"
    if band == "good":
        return (
            "good: the guide covers the posterior; its draws can be used as they are for "
            "means, variances and intervals"
        )
    if band == "usable":
        return (
            "usable with PSIS correction: the guide misses some posterior mass, so plain "
            "guide draws are biased; reweight them (pyro_nf.importance_resample) before "
            "reporting estimates"
        )
    return (
        "unreliable: the posterior has mass where the guide has almost none (too narrow, "
        "wrong shape or in the wrong place); neither its draws nor PSIS-corrected ones can be "
        "trusted. Try a richer guide (e.g. a flow), a longer fit or a reparametrised model"
    )


@dataclass(frozen=True)
class Diagnosis:
    r"""How well a guide approximates the posterior, from :math:`S` importance-weighted draws.

    Attributes:
        guide: The guide's registry name (or class name).
        khat: PSIS Pareto shape :math:`\hat k` of the importance weights.
        num_draws: :math:`S`, the number of guide draws the numbers rest on.
        num_tail: :math:`M`, the number of largest weights the Pareto fit uses.
        ess: Importance-sampling effective sample size of the PSIS-smoothed normalised weights,
            :math:`1 / \sum_s \tilde w_s^2` (between 1 and :math:`S`).
        elbo: :math:`\frac1S\sum_s \log w_s`.
        elbo_se: Monte Carlo standard error of ``elbo``.
        iwelbo: :math:`\log \frac1S \sum_s w_s`, an estimate of the log evidence :math:`\log p(x)`.
        log_p: Per-draw :math:`\log p(x, z_s)` (discrete enumerated sites summed out).
        log_q: Per-draw :math:`\log q(z_s)`.
    """

    guide: str
    khat: float
    num_draws: int
    num_tail: int
    ess: float
    elbo: float
    elbo_se: float
    iwelbo: float
    log_p: np.ndarray = field(repr=False, compare=False)
    log_q: np.ndarray = field(repr=False, compare=False)

    @property
    def log_weights(self) -> np.ndarray:
        r"""Per-draw :math:`\log w_s = \log p(x, z_s) - \log q(z_s)`."""
        return self.log_p - self.log_q

    @property
    def verdict(self) -> str:
        """Yao et al.'s reading of :attr:`khat` (see :func:`verdict`); for a flow guide the advice
        is a richer flow, not "a flow"."""
        text = verdict(self.khat)
        if self.guide.lower() in _FLOW_GUIDES:
            text = text.replace(
                "a richer guide (e.g. a flow)", "a richer flow (more layers, wider hidden layers)"
            )
        return text

    @property
    def num_impossible(self) -> int:
        r"""Draws the model gives zero density (:math:`\log p = -\infty`, e.g. a scale that
        underflowed to 0 in floating point): each makes the ELBO :math:`-\infty`."""
        return int(np.isneginf(np.asarray(self.log_p)).sum())

    @property
    def kl_lower_bound(self) -> float:
        r"""IW-ELBO minus ELBO: an estimate of a lower bound on :math:`\mathrm{KL}(q\,\|\,p)`."""
        return self.iwelbo - self.elbo

    @classmethod
    def from_log_densities(cls, log_p: np.ndarray, log_q: np.ndarray, *, guide: str = "guide") -> Diagnosis:
        """Summarise per-draw log densities (e.g. from :func:`importance_log_weights`)."""
        log_p = np.asarray(log_p, dtype=np.float64).reshape(-1)
        log_q = np.asarray(log_q, dtype=np.float64).reshape(-1)
        # a draw the model cannot score (NaN, e.g. a scale that underflowed to 0) has zero density
        log_p = np.where(np.isnan(log_p), -np.inf, log_p)
        lw = log_p - log_q
        lw = np.where(np.isnan(lw), -np.inf, lw)
        smoothed, khat = psis(lw)
        s = lw.size
        finite = lw[np.isfinite(lw)]
        return cls(
            guide=guide,
            khat=khat,
            num_draws=s,
            num_tail=int(math.ceil(min(s / 5.0, 3.0 * math.sqrt(s)))),
            ess=importance_ess(smoothed),
            elbo=float(lw.mean()),
            elbo_se=float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else math.nan,
            iwelbo=float(_logsumexp(lw) - math.log(s)),
            log_p=log_p,
            log_q=log_q,
        )

    def __repr__(self) -> str:
        label = self.verdict.split(":")[0]
        rows = [
            f"Diagnosis of guide {self.guide!r} from {self.num_draws:,} draws",
            f"  Pareto k-hat     {self.khat:9.3f}   (largest {self.num_tail} weights; < 0.5 good, "
            "0.5-0.7 usable, > 0.7 unreliable)",
            f"  importance ESS   {self.ess:9.1f}   ({100.0 * self.ess / self.num_draws:.1f}% of draws)",
            f"  ELBO             {self.elbo:9.3f}   (+/- {self.elbo_se:.3f})",
            f"  IW-ELBO          {self.iwelbo:9.3f}   (estimates log evidence log p(x))",
            f"  IW-ELBO - ELBO   {self.kl_lower_bound:9.3f}   (estimates a lower bound on KL(q || p), nats)",
        ]
        if self.num_impossible:
            rows.append(
                f"  {self.num_impossible} draw(s) have log p = -inf or could not be scored (NaN): the "
                "guide puts mass where the model has none (in floating point), so the ELBO is -inf"
            )
        if self.num_draws < MIN_KHAT_DRAWS:
            rows.append(f"  k-hat needs at least {MIN_KHAT_DRAWS} draws; got {self.num_draws}")
        rows += [
            f"  verdict: {label}",
            textwrap.fill(
                self.verdict[len(label) + 2 :], width=88, initial_indent="    ", subsequent_indent="    "
            ),
        ]
        return "\n".join(rows)


def importance_log_weights(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 10_000,
    batch_size: int = 1000,
    **model_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-draw :math:`\log p(x, z_s)` and :math:`\log q(z_s)` for :math:`z_s \sim q`.

    Vectorised over an outer particle plate, ``batch_size`` draws at a time (memory grows with
    ``batch_size``, not ``num_samples``). Sites the model enumerates are summed out as
    :class:`~pyro.infer.TraceEnum_ELBO` does. A guide that has never been called is set up first.

    Returns:
        ``(log_p, log_q)``, each a float64 array of shape ``(num_samples,)``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> log_p, log_q = importance_log_weights(model, AutoNormal(model), num_samples=10)
        >>> log_p.shape
        (10,)
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("batch_size", batch_size)
    layout = _traces.inspect_model(model, guide, args, model_kwargs)
    batches = list(
        iter_batches(model, guide, args, model_kwargs, layout, num_samples, batch_size, full=False)
    )
    return (np.concatenate([b.log_p for b in batches]), np.concatenate([b.log_q for b in batches]))


def diagnose(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 10_000,
    batch_size: int = 1000,
    **model_kwargs: Any,
) -> Diagnosis:
    r"""Pareto k-hat, importance ESS, ELBO and IW-ELBO of ``guide`` against ``model``.

    Draws :math:`S` = ``num_samples`` times from the guide, scores each draw under the model
    (:math:`\log w_s = \log p(x, z_s) - \log q(z_s)`) and summarises the weights as in Yao et al.
    (2018): PSIS :math:`\hat k` through ArviZ's ``psislw`` (< 0.5 good, 0.5-0.7 usable with PSIS
    correction, > 0.7 unreliable), :math:`\mathrm{ESS} = 1/\sum_s \tilde w_s^2`, the ELBO and the
    importance-weighted ELBO :math:`\log \frac1S \sum_s w_s`. :math:`\hat k` itself is noisy below
    a few thousand draws.

    Args:
        model: The Pyro model.
        guide: Any guide (an ``AutoGuide`` or a callable with the model's signature).
        *args: The model's positional arguments.
        num_samples: Number of guide draws :math:`S`.
        batch_size: Draws scored at once (bounds memory).
        **model_kwargs: The model's keyword arguments.

    Returns:
        A :class:`Diagnosis`; ``print`` it for a readable report.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> d = diagnose(model, AutoNormal(model, init_scale=0.9), num_samples=2000)
        >>> d.khat < 0.5 and abs(d.iwelbo) < 0.05
        True
    """
    log_p, log_q = importance_log_weights(
        model, guide, *args, num_samples=num_samples, batch_size=batch_size, **model_kwargs
    )
    return Diagnosis.from_log_densities(log_p, log_q, guide=_traces.guide_name(guide))
