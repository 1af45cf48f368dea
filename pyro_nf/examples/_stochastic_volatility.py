r"""Stochastic volatility of the S&P 500, last 100 days (Inference Gym
``StochasticVolatilitySP500Small``), centered.

.. math::

    \phi = 2p - 1,\ p \sim \mathrm{Beta}(20, 1.5), \quad \mu \sim \mathrm{Cauchy}(0, 5), \quad
    s \sim \mathrm{HalfCauchy}(2),

    h_0 \sim N\Big(\mu, \frac{s}{\sqrt{1 - \phi^2}}\Big), \quad
    h_t \sim N\big(\mu + \phi\,(h_{t-1} - \mu), s\big)\ (t = 1..99), \quad
    r_t \sim N\big(0, e^{h_t / 2}\big),

with :math:`\phi` = ``persistence_of_volatility``, :math:`\mu` = ``mean_log_volatility``,
:math:`s` = ``white_noise_shock_scale``, :math:`h` = ``log_volatility`` and :math:`r` the centered
daily returns. Reference: Inference Gym ground truth (CmdStan NUTS on an equivalent non-centered
model, 10 chains x 50,000 draws), means and sds only.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.distributions.transforms import AffineTransform

from pyro_nf.examples._data import Example, describe, event_to_plate, load_json, summaries_from_json, tensor

__all__ = [
    "HALF_LOG_VOLATILITY_BOUND",
    "StationaryAR1",
    "make_stochastic_volatility_example",
    "stochastic_volatility",
]

_FILE = "stochastic_volatility_sp500_small.json"
#: Bound on :math:`|h_t| / 2` where the returns' scale :math:`e^{h_t/2}` is computed (see the model).
HALF_LOG_VOLATILITY_BOUND: float = 30.0


class _PersistencePrior(dist.TransformedDistribution):
    r""":math:`2p - 1` with :math:`p \sim \mathrm{Beta}(20, 1.5)`, with its true support
    :math:`(-1, 1)` (an affine transform alone would report the real line)."""

    support = constraints.interval(-1.0, 1.0)


def _persistence_prior() -> dist.TransformedDistribution:
    return _PersistencePrior(dist.Beta(20.0, 1.5), [AffineTransform(-1.0, 2.0)])


class StationaryAR1(TorchDistribution):
    r"""A stationary Gaussian AR(1) series :math:`h_0, \dots, h_{T-1}` as one event of size T.

    .. math::

        h_0 \sim N\Big(\mu, \frac{s}{\sqrt{1 - \phi^2}}\Big), \qquad
        h_t \mid h_{t-1} \sim N\big(\mu + \phi\,(h_{t-1} - \mu),\ s\big), \quad t = 1..T-1.

    >>> d = StationaryAR1(torch.tensor(1.0), torch.tensor(0.5), torch.tensor(0.1), 4)
    >>> d.sample().shape, d.event_shape
    (torch.Size([4]), torch.Size([4]))
    >>> import math
    >>> h = torch.tensor([1.0, 1.0, 1.0, 1.0])  # at the mean: only the normalising terms
    >>> expected = -2 * math.log(2 * math.pi) - 4 * math.log(0.1) + 0.5 * math.log(1 - 0.5**2)
    >>> abs(float(d.log_prob(h)) - expected) < 1e-5
    True

    Args:
        loc: :math:`\mu`, shape broadcastable to the batch shape.
        persistence: :math:`\phi \in (-1, 1)`.
        scale: Innovation sd :math:`s > 0`.
        num_steps: :math:`T`.
    """

    arg_constraints = {
        "loc": constraints.real,
        "persistence": constraints.interval(-1.0, 1.0),
        "scale": constraints.positive,
    }
    support = constraints.independent(constraints.real, 1)

    def __init__(
        self,
        loc: torch.Tensor,
        persistence: torch.Tensor,
        scale: torch.Tensor,
        num_steps: int,
        validate_args: bool | None = None,
    ) -> None:
        self.loc, self.persistence, self.scale = torch.broadcast_tensors(
            torch.as_tensor(loc), torch.as_tensor(persistence), torch.as_tensor(scale)
        )
        self.num_steps = int(num_steps)
        super().__init__(self.loc.shape, torch.Size([self.num_steps]), validate_args=validate_args)

    def expand(
        self, batch_shape: torch.Size | tuple, _instance: StationaryAR1 | None = None
    ) -> StationaryAR1:
        new = self._get_checked_instance(StationaryAR1, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.persistence = self.persistence.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.num_steps = self.num_steps
        super(StationaryAR1, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _stationary_scale(self) -> torch.Tensor:
        return self.scale / torch.sqrt(1.0 - self.persistence**2)

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            steps = [self.loc + self._stationary_scale() * noise[..., 0]]
            for t in range(1, self.num_steps):
                steps.append(
                    self.loc + self.persistence * (steps[-1] - self.loc) + self.scale * noise[..., t]
                )
            return torch.stack(steps, dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        loc, phi, scale = self.loc.unsqueeze(-1), self.persistence.unsqueeze(-1), self.scale.unsqueeze(-1)
        first = dist.Normal(self.loc, self._stationary_scale()).log_prob(value[..., 0])
        rest = dist.Normal(loc + phi * (value[..., :-1] - loc), scale).log_prob(value[..., 1:])
        return first + rest.sum(-1)


def stochastic_volatility(T: int, centered_returns: torch.Tensor | None = None) -> None:
    r"""Centered stochastic-volatility model with heavy-tailed priors (Inference Gym).

    .. math::

        \mathrm{persistence\_of\_volatility} = 2p - 1,\ p \sim \mathrm{Beta}(20, 1.5), \quad
        \mathrm{mean\_log\_volatility} \sim \mathrm{Cauchy}(0, 5), \quad
        \mathrm{white\_noise\_shock\_scale} \sim \mathrm{HalfCauchy}(2),

        \mathrm{log\_volatility} \sim \mathrm{StationaryAR1}(\mathrm{mean\_log\_volatility},
            \mathrm{persistence\_of\_volatility}, \mathrm{white\_noise\_shock\_scale}), \quad
        r_t \sim N\big(0, e^{\mathrm{log\_volatility}_t / 2}\big).

    ``persistence_of_volatility`` is itself the latent site (support :math:`(-1, 1)`, density of
    the shifted and scaled Beta), as in the Inference Gym; ``log_volatility`` is one vector site
    of shape ``(T,)`` (:class:`StationaryAR1`). The returns' scale is computed as
    :math:`\exp(\mathrm{clamp}(h_t / 2, \pm 30))`: exact for :math:`|h_t| \le 60` (the posterior
    keeps :math:`h_t` within about 4..14), and it keeps the density finite in ``float32`` at the
    Cauchy-sized :math:`h` that prior draws reach (``exp`` overflows past 88).

    Why it is hard: 103 latent dimensions, Cauchy and half-Cauchy priors, and in this centered
    form a funnel between ``white_noise_shock_scale`` and the latent series (the spread of each
    :math:`h_t` around its predecessor is the shock scale).

    Args:
        T: Number of days (plate ``"time"``).
        centered_returns: Observed returns, shape ``(T,)`` (site ``"centered_returns"``); ``None``
            draws them.
    """
    persistence = pyro.sample("persistence_of_volatility", _persistence_prior())
    mean_log_volatility = pyro.sample("mean_log_volatility", dist.Cauchy(0.0, 5.0))
    shock_scale = pyro.sample("white_noise_shock_scale", dist.HalfCauchy(2.0))
    log_volatility = pyro.sample(
        "log_volatility", StationaryAR1(mean_log_volatility, persistence, shock_scale, T)
    )
    with pyro.plate("time", T):
        half = event_to_plate(log_volatility, "log_volatility") / 2
        scale = torch.exp(half.clamp(-HALF_LOG_VOLATILITY_BOUND, HALF_LOG_VOLATILITY_BOUND))
        pyro.sample("centered_returns", dist.Normal(0.0, scale), obs=centered_returns)


def make_stochastic_volatility_example() -> Example:
    """The ``stochastic_volatility`` example: 103 latent dimensions, reference means and sds."""
    doc = load_json(_FILE)
    raw = doc["data"]
    names = {
        s: s
        for s in (
            "persistence_of_volatility",
            "mean_log_volatility",
            "white_noise_shock_scale",
            "log_volatility",
        )
    }
    return Example(
        name="stochastic_volatility",
        model=stochastic_volatility,
        data={"T": int(raw["T"]), "centered_returns": tensor(raw["centered_returns"])},
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], names),
    )
