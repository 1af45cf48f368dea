r"""Kilpisjärvi summer temperatures (posteriordb ``kilpisjarvi_mod-kilpisjarvi``).

.. math::

    \alpha \sim N(9.3129, 100), \quad \beta \sim N(0, 1/30), \quad
    p(\sigma) \propto 1 \text{ on } (0, \infty), \quad
    y_n \sim N(\alpha + \beta x_n, \sigma), \quad n = 1..62,

where :math:`x_n` is the year *plus 2000* (3952..4013, as posteriordb's data file has it) and
:math:`y_n` the mean summer temperature at Kilpisjärvi. Reference: posteriordb's Stan NUTS draws
(10 chains, 10,000 draws; 1,000 thinned draws ship here).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_nf.examples._data import Example, describe, draws_from_json, load_json, summaries_from_json, tensor

__all__ = ["ALPHA_PRIOR", "BETA_PRIOR", "kilpisjarvi", "make_kilpisjarvi_example"]

_FILE = "kilpisjarvi.json"
#: ``(loc, scale)`` of the Normal prior of ``alpha`` (posteriordb data ``pmualpha``, ``psalpha``).
ALPHA_PRIOR: tuple[float, float] = (9.31290322580645, 100.0)
#: ``(loc, scale)`` of the Normal prior of ``beta`` (posteriordb data ``pmubeta``, ``psbeta``).
BETA_PRIOR: tuple[float, float] = (0.0, 0.0333333333333333)


def kilpisjarvi(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    r"""Linear regression of temperature on an uncentered year (posteriordb ``kilpisjarvi``).

    .. math::

        \alpha \sim N(9.3129, 100), \quad \beta \sim N(0, 0.0333), \quad
        p(\sigma) \propto 1_{\sigma > 0}, \quad y_n \sim N(\alpha + \beta x_n, \sigma).

    ``sigma`` has the implicit improper flat prior of the Stan model (no sampling statement): its
    log density is exactly zero, written as ``LogNormal(0, 1).mask(False)``, Pyro's idiom for an
    improper site that can still be drawn (``ImproperUniform`` cannot, and Pyro and pyro_nf trace
    models forward to find their sites). Forward draws of ``sigma`` (a plain model call, the
    initial point of ``init_to_median``) therefore come from ``LogNormal(0, 1)``, which is no prior:
    this model has no prior predictive. Its posterior predictive is fine (``y=None`` under a guide
    or posterior draws).

    Why mean-field fails: :math:`x` is not centered (mean 3982.5, sd 18), so the intercept and
    slope are correlated at :math:`-0.99999`. The KL-optimal factorised Gaussian matches the
    conditional variances and is about 200 times too narrow in ``alpha`` and ``beta``.

    Args:
        x: The predictor (year + 2000), shape ``(N,)``.
        y: Observed temperatures, shape ``(N,)`` (site ``"y"``, plate ``"year"``); ``None``
            draws them.
    """
    alpha = pyro.sample("alpha", dist.Normal(*ALPHA_PRIOR))
    beta = pyro.sample("beta", dist.Normal(*BETA_PRIOR))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0).mask(False))
    with pyro.plate("year", x.shape[-1]):
        pyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def make_kilpisjarvi_example() -> Example:
    """The ``kilpisjarvi`` example: latent ``alpha``, ``beta``, ``sigma``; 1,000 reference draws."""
    doc = load_json(_FILE)
    raw = doc["data"]
    return Example(
        name="kilpisjarvi",
        model=kilpisjarvi,
        data={"x": tensor(raw["x"]), "y": tensor(raw["y"])},
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], {s: s for s in ("alpha", "beta", "sigma")}),
        reference_draws=draws_from_json(doc["reference_draws_thinned"]),
    )
