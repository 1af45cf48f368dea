r"""Autoregressive model of order K = 5 (posteriordb ``arK-arK``).

.. math::

    \alpha \sim N(0, 10), \quad \beta_k \sim N(0, 10)\ (k = 1..K), \quad
    \sigma \sim \mathrm{HalfCauchy}(2.5), \quad
    y_t \sim N\Big(\alpha + \sum_{k=1}^{K} \beta_k\, y_{t-k},\ \sigma\Big), \quad t = K+1..T,

with T = 200; the first K observations are conditioned on, not modelled. Reference: posteriordb's
Stan NUTS draws (10 chains, 10,000 draws; 1,000 thinned draws ship here).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_nf.examples._data import Example, describe, draws_from_json, load_json, summaries_from_json, tensor

__all__ = ["ark", "ark_data", "make_ark_example"]

_FILE = "arK.json"


def ark(lags: torch.Tensor, y: torch.Tensor | None = None) -> None:
    r"""AR(K) regression of each observation on the K before it (posteriordb ``arK``).

    .. math::

        \alpha \sim N(0, 10), \quad \beta \sim N(0, 10 I_K), \quad
        \sigma \sim \mathrm{HalfCauchy}(2.5), \quad
        y_n \sim N(\alpha + \mathrm{lags}_n \cdot \beta, \sigma),

    where ``lags[n, k-1]`` is the value k steps before ``y[n]``. The model is conditional on the
    lags, as the Stan model is on the first K values; so with ``y=None`` it draws one-step-ahead
    predictions given the observed past, not a simulated series.

    Why it is easy-moderate: the posterior is near Gaussian, but the AR coefficients are jointly
    strongly dependent (neighbouring lags correlate at about -0.63), so mean-field sds are only
    about a quarter to a third of the true ``beta`` sds.

    Args:
        lags: Lagged series, shape ``(N, K)`` (see :func:`ark_data`).
        y: Observed values, shape ``(N,)`` (site ``"y"``, plate ``"time"``); ``None`` draws them.
    """
    alpha = pyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = pyro.sample("beta", dist.Normal(lags.new_zeros(lags.shape[-1]), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(2.5))
    # Elementwise product, not matmul: beta may carry batch dims (particles) left of the plate dim.
    loc = alpha + (lags * beta).sum(-1)
    with pyro.plate("time", lags.shape[-2]):
        pyro.sample("y", dist.Normal(loc, sigma), obs=y)


def ark_data(series: torch.Tensor, K: int) -> dict[str, torch.Tensor]:
    r"""Model keywords from a series :math:`y_1..y_T`: ``y`` = :math:`y_{K+1..T}` and
    ``lags[n, k-1]`` = :math:`y_{K+n+1-k}` (0-based ``n``), the value k steps before ``y[n]``.

    >>> out = ark_data(torch.arange(6.0), 2)
    >>> out["y"].tolist(), out["lags"].tolist()
    ([2.0, 3.0, 4.0, 5.0], [[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]])
    """
    T = series.shape[-1]
    lags = torch.stack([series[K - k : T - k] for k in range(1, K + 1)], dim=-1)
    return {"lags": lags, "y": series[K:].clone()}


def make_ark_example() -> Example:
    """The ``arK`` example: latent ``alpha``, ``beta`` (5), ``sigma``; 1,000 reference draws."""
    doc = load_json(_FILE)
    raw = doc["data"]
    return Example(
        name="arK",
        model=ark,
        data=dict(ark_data(tensor(raw["y"]), int(raw["K"]))),
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], {s: s for s in ("alpha", "beta", "sigma")}),
        reference_draws=draws_from_json(doc["reference_draws_thinned"]),
    )
