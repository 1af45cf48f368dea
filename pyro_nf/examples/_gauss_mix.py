r"""Two-component 1-D Gaussian mixture with ordered means (posteriordb
``low_dim_gauss_mix-low_dim_gauss_mix``).

.. math::

    \mu \in \{\mu_1 < \mu_2\},\ p(\mu) \propto N(\mu_1; 0, 2)\,N(\mu_2; 0, 2), \quad
    \sigma_i \sim N^+(0, 2), \quad \theta \sim \mathrm{Beta}(5, 5),

    y_n \sim \theta\, N(\mu_1, \sigma_1) + (1 - \theta)\, N(\mu_2, \sigma_2), \quad n = 1..1000.

The component assignments are marginalised (a log-sum-exp over the two components per
observation), so every latent is continuous. Reference: posteriordb's Stan NUTS draws (10 chains,
10,000 draws; 1,000 thinned draws ship here).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from pyro_nf.examples._data import Example, describe, draws_from_json, load_json, summaries_from_json, tensor

__all__ = ["OrderedNormal", "low_dim_gauss_mix", "make_low_dim_gauss_mix_example"]

_FILE = "low_dim_gauss_mix.json"


class OrderedNormal(TorchDistribution):
    r"""The order statistics of ``size`` i.i.d. :math:`N(\mathrm{loc}, \mathrm{scale})` draws.

    Its density is the i.i.d. Normal density restricted to the ordered region and normalised,

    .. math::

        p(v) = K!\, \prod_{i=1}^{K} N(v_i; \mathrm{loc}, \mathrm{scale})\ \text{if}\
        v_1 < \dots < v_K, \quad 0 \text{ otherwise},

    Stan's ``ordered[K] mu; mu ~ normal(loc, scale)`` made proper (the constant :math:`\log K!` is
    Stan's missing normaliser). Samples sort i.i.d. draws; the support is
    ``constraints.ordered_vector`` (Pyro's unconstrained map is Stan's ordered transform).

    >>> d = OrderedNormal(0.0, 2.0, 2)
    >>> v = d.sample((3,))
    >>> v.shape, bool((v[:, 0] < v[:, 1]).all())
    (torch.Size([3, 2]), True)
    >>> round(float(d.log_prob(torch.tensor([2.0, 1.0]))), 3)  # not ordered
    -inf

    Args:
        loc: Mean of each draw before sorting.
        scale: Standard deviation of each draw before sorting (positive).
        size: Number :math:`K` of draws (the event size).
    """

    arg_constraints: dict = {}
    support = constraints.ordered_vector

    def __init__(
        self,
        loc: float,
        scale: float,
        size: int,
        batch_shape: torch.Size | tuple = (),
        validate_args: bool | None = None,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"OrderedNormal: scale must be positive, got {scale}")
        if size < 1:
            raise ValueError(f"OrderedNormal: size must be a positive int, got {size}")
        self.loc, self.scale, self.size = float(loc), float(scale), int(size)
        super().__init__(torch.Size(batch_shape), torch.Size([self.size]), validate_args=validate_args)

    def expand(
        self, batch_shape: torch.Size | tuple, _instance: OrderedNormal | None = None
    ) -> OrderedNormal:
        new = self._get_checked_instance(OrderedNormal, _instance)
        new.loc, new.scale, new.size = self.loc, self.scale, self.size
        super(OrderedNormal, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            draws = self.loc + self.scale * torch.randn(shape)
            return torch.sort(draws, dim=-1).values

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_p = dist.Normal(self.loc, self.scale).log_prob(value).sum(-1) + math.lgamma(self.size + 1)
        ordered = (value[..., 1:] > value[..., :-1]).all(-1)
        log_p = torch.where(ordered, log_p, log_p.new_tensor(-math.inf))
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))


def low_dim_gauss_mix(N: int, y: torch.Tensor | None = None) -> None:
    r"""A two-component Normal mixture, assignments marginalised (posteriordb
    ``low_dim_gauss_mix``).

    .. math::

        \mu \sim \mathrm{OrderedNormal}(0, 2), \quad \sigma_i \sim N^+(0, 2), \quad
        \theta \sim \mathrm{Beta}(5, 5), \quad
        p(y_n) = \theta\, N(y_n; \mu_1, \sigma_1) + (1 - \theta)\, N(y_n; \mu_2, \sigma_2).

    ``mu`` (shape ``(2,)``) is ordered (:class:`OrderedNormal`: the Stan prior, normalised),
    ``sigma`` (shape ``(2,)``) positive and ``theta`` in the unit interval.

    Why it is easy-moderate: the components are well separated and the ordering removes label
    switching, so the posterior is unimodal and close to Gaussian on the unconstrained scale; it
    tests that a guide handles ordered, positive and unit-interval supports.

    Args:
        N: Number of observations (plate ``"obs"``).
        y: Observations, shape ``(N,)`` (site ``"y"``); ``None`` draws them.
    """
    mu = pyro.sample("mu", OrderedNormal(0.0, 2.0, 2))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(5.0, 5.0))
    weights = torch.stack([theta, 1.0 - theta], dim=-1)
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=weights), dist.Normal(mu, sigma))
    with pyro.plate("obs", N):
        pyro.sample("y", mixture, obs=y)


def make_low_dim_gauss_mix_example() -> Example:
    """The ``low_dim_gauss_mix`` example: latent ``mu`` (2, ordered), ``sigma`` (2), ``theta``;
    1,000 reference draws."""
    doc = load_json(_FILE)
    raw = doc["data"]
    return Example(
        name="low_dim_gauss_mix",
        model=low_dim_gauss_mix,
        data={"N": int(raw["N"]), "y": tensor(raw["y"])},
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], {s: s for s in ("mu", "sigma", "theta")}),
        reference_draws=draws_from_json(doc["reference_draws_thinned"]),
    )
