r"""The 2-D banana (Inference Gym ``Banana(ndims=2, curvature=0.03)``), with exact references.

.. math::

    x_0 \sim N(0, 10), \qquad x_1 \mid x_0 \sim N\big(b\,(x_0^2 - 100), 1\big), \quad b = 0.03.

The Inference Gym writes one vector ``x = (x_0, x_1)``; here the two coordinates are the scalar
sites ``x0`` and ``x1``, which states the conditional structure exactly. The density is normalised
(:math:`\log Z = 0`), so the ELBO is exactly :math:`-\mathrm{KL}(q \,\|\, p)`.
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

__all__ = ["CURVATURE", "X0_SCALE", "banana", "banana_log_density", "banana_sampler", "make_banana_example"]

#: Curvature :math:`b` of the banana.
CURVATURE: float = 0.03
#: Standard deviation of :math:`x_0`.
X0_SCALE: float = 10.0


def banana() -> None:
    r"""Banana-shaped 2-D density (Haario et al. 1999; Inference Gym ``Banana``).

    .. math::

        x_0 \sim N(0, 10), \qquad x_1 \mid x_0 \sim N\big(0.03\,(x_0^2 - 100), 1\big).

    Why mean-field fails: :math:`x_0` and :math:`x_1` are uncorrelated (the moment-matched Gaussian
    is diagonal, :math:`N(0, \mathrm{diag}(100, 19))`) yet strongly dependent: :math:`x_1` sits
    within :math:`\pm 2` of the parabola :math:`0.03(x_0^2 - 100)`. No Gaussian, mean-field or
    full-rank, can follow the curve, so reverse-KL VI shrinks onto the bend near :math:`x_0 = 0`;
    planar and autoregressive flows can represent it (an affine autoregressive layer whose shift
    is quadratic in :math:`x_0` is the exact map).
    """
    x0 = pyro.sample("x0", dist.Normal(0.0, X0_SCALE))
    pyro.sample("x1", dist.Normal(CURVATURE * (x0**2 - X0_SCALE**2), 1.0))


def banana_log_density(values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    r"""Exact normalised log density, written out (not via ``pyro.distributions``).

    .. math::

        \log p(x) = -\log(2\pi) - \log 10 - \frac{x_0^2}{200}
            - \tfrac12\big(x_1 - 0.03(x_0^2 - 100)\big)^2.

    Args:
        values: ``{"x0": (*batch), "x1": (*batch)}``.

    Returns:
        Log density, shape ``batch``.
    """
    x0, x1 = values["x0"], values["x1"]
    residual = x1 - CURVATURE * (x0**2 - X0_SCALE**2)
    return -math.log(2 * math.pi) - math.log(X0_SCALE) - x0**2 / (2 * X0_SCALE**2) - residual**2 / 2


def banana_sampler(num_samples: int, seed: int) -> dict[str, torch.Tensor]:
    r"""Exact independent draws: :math:`x_0 = 10 e_0`, :math:`x_1 = e_1 + 0.03(x_0^2 - 100)`.

    Args:
        num_samples: Number of draws.
        seed: Seed of a private ``torch.Generator`` (the global RNG is not touched).

    Returns:
        ``{"x0": (num_samples,), "x1": (num_samples,)}`` in torch's default dtype, on CPU.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64, device="cpu")
    x0 = X0_SCALE * noise[:, 0]
    x1 = noise[:, 1] + CURVATURE * (x0**2 - X0_SCALE**2)
    dtype = torch.get_default_dtype()
    return {"x0": x0.to(dtype), "x1": x1.to(dtype)}


@functools.cache
def _x1_quantiles() -> tuple[float, ...]:
    r"""Quantiles of :math:`x_1`, :math:`F(q) = \mathbb{E}_u[\Phi(q - b(100u^2 - 100))]`."""
    return tuple(mixture_quantiles(lambda q, u: q - CURVATURE * (X0_SCALE**2 * u**2 - X0_SCALE**2)))


def _reference() -> dict[str, dict[str, np.ndarray]]:
    r"""Closed forms: :math:`x_0 \sim N(0, 10)`; :math:`x_1` has mean 0 and variance
    :math:`1 + b^2\,\mathrm{Var}(x_0^2) = 1 + 2 b^2 \cdot 10^4 = 19`; quantiles by quadrature."""
    x0 = {"mean": np.asarray(0.0), "sd": np.asarray(X0_SCALE)}
    x0.update({k: np.asarray(v) for k, v in normal_quantiles(0.0, X0_SCALE).items()})
    x1 = {"mean": np.asarray(0.0), "sd": np.asarray(math.sqrt(1.0 + 2.0 * CURVATURE**2 * X0_SCALE**4))}
    x1.update({k: np.asarray(v) for k, v in zip(QUANTILE_LEVELS, _x1_quantiles(), strict=True)})
    return {"x0": x0, "x1": x1}


def make_banana_example() -> Example:
    """The ``banana`` example: no data, exact reference, sampler and log density."""
    doc = load_json("banana.json")
    return Example(
        name="banana",
        model=banana,
        data={},
        description=describe(doc),
        reference=_reference(),
        reference_draws=None,
        exact_sampler=banana_sampler,
        log_density=banana_log_density,
    )
