r"""Neal's funnel in 10 dimensions (Inference Gym ``NealsFunnel(ndims=10)``), with exact references.

.. math::

    z \sim N(0, 3), \qquad x_i \mid z \sim N\big(0, e^{z/2}\big), \quad i = 1, \dots, 9.

The Inference Gym writes the ten coordinates as one vector ``x = (z, x_1, ..., x_9)``; here the
log-scale :math:`z` is its own site ``log_scale`` so that ArviZ summaries and tests can address it
directly, and the other nine are the site ``x`` (shape ``(9,)``, plate ``"dims"``). The density is
normalised (:math:`\log Z = 0`), so the ELBO is exactly :math:`-\mathrm{KL}(q \,\|\, p)`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_nf.examples._data import (
    QUANTILE_LEVELS,
    Example,
    describe,
    load_json,
    mixture_quantiles,
    normal_quantiles,
)

__all__ = ["LOG_SCALE_SD", "funnel", "funnel_log_density", "funnel_sampler", "make_funnel_example"]

#: Prior standard deviation of the log-scale :math:`z`.
LOG_SCALE_SD: float = 3.0
DEFAULT_DIM: int = 10


def funnel(dim: int = 10) -> None:
    r"""Neal's funnel (Neal 2003; Inference Gym ``NealsFunnel``), ``dim`` coordinates in all.

    .. math::

        \mathrm{log\_scale} \sim N(0, 3), \qquad
        x_i \mid \mathrm{log\_scale} \sim N\big(0, \exp(\mathrm{log\_scale}/2)\big),
        \quad i = 1, \dots, \mathrm{dim} - 1.

    Why mean-field fails: write :math:`z` for ``log_scale``. The scale of every :math:`x_i` is
    :math:`e^{z/2}`, which runs from :math:`e^{-2.5}` to :math:`e^{2.5}` over the central 90% of
    :math:`z`. A product of independent Gaussians cannot put narrow :math:`x` where
    :math:`z \ll 0` and wide :math:`x` where :math:`z \gg 0`: reverse-KL VI shrinks the spread of
    :math:`z` and misses the heavy (normal scale-mixture) tails of the :math:`x_i`, whose sd
    :math:`e^{9/4} \approx 9.49` is driven by rare huge values. Flows can bend to the funnel, but
    its neck (:math:`z \ll 0`) is hard for every method.

    Args:
        dim: Total dimension: one ``log_scale`` plus ``dim - 1`` coordinates ``x`` (plate
            ``"dims"``). The shipped reference, sampler and density are for ``dim = 10``.
    """
    log_scale = pyro.sample("log_scale", dist.Normal(0.0, LOG_SCALE_SD))
    with pyro.plate("dims", dim - 1):
        pyro.sample("x", dist.Normal(0.0, torch.exp(log_scale / 2)))


def funnel_log_density(values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    r"""Exact normalised log density, written out (not via ``pyro.distributions``).

    .. math::

        \log p(z, x) = -\tfrac12\log(2\pi) - \log 3 - \frac{z^2}{18}
            + \sum_{i} \Big[-\tfrac12\log(2\pi) - \frac{z}{2} - \frac{x_i^2}{2 e^{z}}\Big].

    Args:
        values: ``{"log_scale": (*batch), "x": (*batch, dim - 1)}``.

    Returns:
        Log density, shape ``batch``.
    """
    z, x = values["log_scale"], values["x"]
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_p_z = -half_log_2pi - math.log(LOG_SCALE_SD) - z**2 / (2 * LOG_SCALE_SD**2)
    log_p_x = -half_log_2pi - z.unsqueeze(-1) / 2 - x**2 / (2 * torch.exp(z).unsqueeze(-1))
    return log_p_z + log_p_x.sum(-1)


def funnel_sampler(num_samples: int, seed: int) -> dict[str, torch.Tensor]:
    r"""Exact draws: :math:`z = 3 e_0`, :math:`x_i = e^{z/2} e_i`, :math:`e \sim N(0, I)`.

    Args:
        num_samples: Number of draws.
        seed: Seed of a private ``torch.Generator`` (the global RNG is not touched).

    Returns:
        ``{"log_scale": (num_samples,), "x": (num_samples, 9)}`` in torch's default dtype, on CPU.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(num_samples, DEFAULT_DIM, generator=generator, dtype=torch.float64, device="cpu")
    z = LOG_SCALE_SD * noise[:, 0]
    x = torch.exp(z / 2).unsqueeze(-1) * noise[:, 1:]
    dtype = torch.get_default_dtype()
    return {"log_scale": z.to(dtype), "x": x.to(dtype)}


@functools.cache
def _x_quantiles() -> tuple[float, ...]:
    r"""Quantiles of one :math:`x_i`, :math:`F(q) = \mathbb{E}_u[\Phi(q\, e^{-3u/2})]`."""
    return tuple(mixture_quantiles(lambda q, u: q * np.exp(-LOG_SCALE_SD * u / 2)))


def _reference(dim: int) -> dict[str, dict[str, np.ndarray]]:
    r"""Closed forms: :math:`z`: mean 0, sd 3, Normal quantiles; :math:`x_i`: mean 0,
    sd :math:`\sqrt{\mathbb{E}[e^{z}]} = e^{3^2/4}`, mixture quantiles (:func:`_x_quantiles`)."""
    z_ref = {"mean": np.asarray(0.0), "sd": np.asarray(LOG_SCALE_SD)}
    z_ref.update({k: np.asarray(v) for k, v in normal_quantiles(0.0, LOG_SCALE_SD).items()})
    n = dim - 1
    x_ref = {"mean": np.zeros(n), "sd": np.full(n, math.exp(LOG_SCALE_SD**2 / 4))}
    x_ref.update({k: np.full(n, v) for k, v in zip(QUANTILE_LEVELS, _x_quantiles(), strict=True)})
    return {"log_scale": z_ref, "x": x_ref}


def make_funnel_example() -> Example:
    """The ``funnel`` example: no data, exact reference, sampler and log density (``dim = 10``)."""
    doc = load_json("neals_funnel_10d.json")
    return Example(
        name="funnel",
        model=funnel,
        data={},
        description=describe(doc),
        reference=_reference(DEFAULT_DIM),
        reference_draws=None,
        exact_sampler=funnel_sampler,
        log_density=funnel_log_density,
    )
