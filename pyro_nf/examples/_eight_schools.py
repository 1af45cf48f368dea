r"""Eight schools (Rubin 1981; posteriordb ``eight_schools``), centered and non-centered.

.. math::

    \mu \sim N(0, 5), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
    \theta_j \sim N(\mu, \tau), \quad y_j \sim N(\theta_j, \sigma_j), \quad j = 1, \dots, 8,

with :math:`\sigma_j` known. Both parametrisations share one posterior and one reference:
posteriordb's Stan NUTS draws of the non-centered model (10 chains, 10,000 draws; 1,000 thinned
draws ship here).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_nf.examples._data import Example, describe, draws_from_json, load_json, summaries_from_json, tensor

__all__ = [
    "eight_schools_centered",
    "eight_schools_noncentered",
    "make_eight_schools_centered_example",
    "make_eight_schools_noncentered_example",
]


def eight_schools_centered(J: int, sigma: torch.Tensor, y: torch.Tensor | None = None) -> None:
    r"""Eight schools, centered (posteriordb ``eight_schools-eight_schools_centered``).

    .. math::

        \mu \sim N(0, 5), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
        \theta_j \sim N(\mu, \tau), \quad y_j \sim N(\theta_j, \sigma_j), \quad j = 1..J.

    Why mean-field fails: the prior couples :math:`\theta` and :math:`\log\tau` in a funnel (the
    spread of :math:`\theta` is :math:`\tau`), and eight noisy observations do not remove it. A
    factorised Gaussian in :math:`(\mu, \log\tau, \theta)` cannot narrow :math:`\theta` as
    :math:`\tau \to 0`; reverse-KL VI collapses :math:`\tau` toward 0 and under-disperses
    :math:`\theta` (PSIS :math:`\hat k > 0.7`, Yao et al. 2018).

    Args:
        J: Number of schools (plate ``"school"``).
        sigma: Known standard errors, shape ``(J,)``.
        y: Observed effects, shape ``(J,)`` (site ``"obs"``); ``None`` draws them.
    """
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(J: int, sigma: torch.Tensor, y: torch.Tensor | None = None) -> None:
    r"""Eight schools, non-centered (posteriordb ``eight_schools-eight_schools_noncentered``).

    .. math::

        \mu \sim N(0, 5), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
        \tilde\theta_j \sim N(0, 1), \quad \theta_j = \mu + \tau\,\tilde\theta_j, \quad
        y_j \sim N(\theta_j, \sigma_j).

    :math:`\tilde\theta` is the site ``theta_trans`` (posteriordb's name); :math:`\theta` is
    recorded as a deterministic site ``theta``.

    Why mean-field does well: the reparametrisation removes most of the funnel: a priori
    :math:`\tilde\theta` is independent of :math:`\tau`, and the data are weak, so the posterior
    is close to a product of its marginals apart from the heavy right tail of :math:`\tau`
    (half-Cauchy). It is the easy control for :func:`eight_schools_centered`.

    Args:
        J: Number of schools (plate ``"school"``).
        sigma: Known standard errors, shape ``(J,)``.
        y: Observed effects, shape ``(J,)`` (site ``"obs"``); ``None`` draws them.
    """
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", J):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans, event_dim=0)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _data(filename: str) -> dict[str, torch.Tensor | int]:
    raw = load_json(filename)["data"]
    return {"J": int(raw["J"]), "sigma": tensor(raw["sigma"]), "y": tensor(raw["y"])}


def make_eight_schools_centered_example() -> Example:
    """The ``eight_schools_centered`` example: latent ``mu``, ``tau``, ``theta`` (8)."""
    doc = load_json("eight_schools_centered.json")
    return Example(
        name="eight_schools_centered",
        model=eight_schools_centered,
        data=_data("eight_schools_centered.json"),
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], {s: s for s in ("mu", "tau", "theta")}),
        reference_draws=draws_from_json(doc["reference_draws_thinned"]),
    )


def make_eight_schools_noncentered_example() -> Example:
    """The ``eight_schools_noncentered`` example: latent ``mu``, ``tau``, ``theta_trans`` (8), and
    the deterministic ``theta`` (8) in ``reference`` and ``reference_draws``."""
    doc = load_json("eight_schools_noncentered.json")
    names = {s: s for s in ("mu", "tau", "theta_trans", "theta")}
    return Example(
        name="eight_schools_noncentered",
        model=eight_schools_noncentered,
        data=_data("eight_schools_noncentered.json"),
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], names),
        reference_draws=draws_from_json(doc["reference_draws_thinned"]),
    )
