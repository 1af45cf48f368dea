r"""Latent Gaussian process with a Poisson likelihood (posteriordb ``gp_pois_regr-gp_pois_regr``).

.. math::

    \rho \sim \mathrm{Gamma}(25, 4), \quad \alpha \sim N^+(0, 2), \quad
    \tilde f \sim N(0, I_{11}), \quad f = L \tilde f, \quad k_n \sim \mathrm{Poisson}(e^{f_n}),

    L = \mathrm{chol}(K), \quad
    K_{ij} = \alpha^2 \exp\!\Big(-\frac{(x_i - x_j)^2}{2\rho^2}\Big) + 10^{-10}\,\delta_{ij},

on the eleven inputs :math:`x = -10, -8, \dots, 10`. Reference: posteriordb's Stan NUTS draws
(10 chains, 10,000 draws; 1,000 thinned draws ship here, with ``f`` rebuilt from them).
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_nf.examples._data import (
    Example,
    describe,
    draws_from_json,
    event_to_plate,
    load_json,
    summaries_from_json,
    tensor,
)

__all__ = ["JITTER", "gp_pois_regr", "gp_pois_regr_f", "make_gp_pois_regr_example"]

_FILE = "gp_pois_regr.json"
#: Diagonal jitter added to the kernel matrix before its Cholesky factor (as in the Stan model).
JITTER: float = 1e-10


def gp_pois_regr_f(
    x: torch.Tensor, rho: torch.Tensor, alpha: torch.Tensor, f_tilde: torch.Tensor
) -> torch.Tensor:
    r"""The latent function :math:`f = \mathrm{chol}(K(\alpha, \rho))\, \tilde f`.

    The kernel matrix is factorised in ``float64`` whatever the inputs' dtype: with the Stan
    model's jitter of :math:`10^{-10}` it is far too ill-conditioned for a ``float32`` Cholesky
    (its smallest eigenvalues are below ``float32`` resolution); the result is cast back.

    Args:
        x: Inputs, shape ``(N,)``.
        rho: Length scale, shape ``batch``.
        alpha: Marginal sd, shape ``batch``.
        f_tilde: Whitened latents, shape ``(*batch, N)``.

    Returns:
        ``f``, shape ``(*batch, N)``.

    Raises:
        torch.linalg.LinAlgError: If the kernel matrix is not positive definite in ``float64``.
    """
    x64 = x.double()
    sq_dist = (x64.unsqueeze(-1) - x64) ** 2
    rho64, alpha64 = rho.double()[..., None, None], alpha.double()[..., None, None]
    kernel = alpha64**2 * torch.exp(-sq_dist / (2 * rho64**2))
    kernel = kernel + JITTER * torch.eye(x.shape[-1], dtype=torch.float64, device=x.device)
    chol = torch.linalg.cholesky(kernel)
    return (chol @ f_tilde.double().unsqueeze(-1)).squeeze(-1).to(f_tilde.dtype)


def gp_pois_regr(x: torch.Tensor, k: torch.Tensor | None = None) -> None:
    r"""Poisson regression on a latent squared-exponential GP, whitened (posteriordb
    ``gp_pois_regr``).

    .. math::

        \rho \sim \mathrm{Gamma}(25, 4), \quad \alpha \sim N^+(0, 2), \quad
        \tilde f \sim N(0, I_N), \quad f = \mathrm{chol}(K(\alpha, \rho))\, \tilde f, \quad
        k_n \sim \mathrm{Poisson}(e^{f_n}),

    with :math:`K` as in the module docstring (see :func:`gp_pois_regr_f`); ``f`` is recorded as a
    deterministic site of shape ``(N,)``.

    Why it is moderately hard: the whitened latents are coupled to the kernel's hyperparameters
    (``log alpha`` and ``f_tilde[1]`` correlate at -0.97), and the Poisson likelihood and positive
    hyperparameters make the posterior non-Gaussian.

    Args:
        x: Inputs, shape ``(N,)``.
        k: Observed counts, shape ``(N,)`` (site ``"k"``, plate ``"point"``); ``None`` draws them.
    """
    rho = pyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = pyro.sample("f_tilde", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    f = pyro.deterministic("f", gp_pois_regr_f(x, rho, alpha, f_tilde), event_dim=1)
    with pyro.plate("point", x.shape[-1]):
        pyro.sample("k", dist.Poisson(torch.exp(event_to_plate(f, "f"))), obs=k)


def _reference_draws(x: np.ndarray, thinned: dict) -> dict[str, np.ndarray]:
    """The thinned draws of ``rho``, ``alpha``, ``f_tilde``, plus ``f`` rebuilt from each (float64)."""
    draws = draws_from_json(thinned)
    f = gp_pois_regr_f(
        torch.from_numpy(x), *(torch.from_numpy(draws[s]) for s in ("rho", "alpha", "f_tilde"))
    )
    return {**draws, "f": f.numpy()}


def make_gp_pois_regr_example() -> Example:
    """The ``gp_pois_regr`` example: latent ``rho``, ``alpha``, ``f_tilde`` (11), deterministic
    ``f`` (11); 1,000 reference draws. The JSON's unused ``y_unused`` is not model data."""
    doc = load_json(_FILE)
    raw = doc["data"]
    return Example(
        name="gp_pois_regr",
        model=gp_pois_regr,
        data={"x": tensor(raw["x"]), "k": tensor(raw["k"])},
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], {s: s for s in ("rho", "alpha", "f_tilde", "f")}),
        reference_draws=_reference_draws(
            np.asarray(raw["x"], dtype=np.float64), doc["reference_draws_thinned"]
        ),
    )
