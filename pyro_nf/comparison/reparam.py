r"""Non-centring of a model's location-scale sites, learnable or fixed (Gorinova, Moore & Hoffman 2020).

A hierarchical site :math:`z \sim N(\mu, \sigma)` whose :math:`\mu, \sigma` depend on other latents
is, in the centred form, a funnel; written as :math:`z = \mu + \sigma \tilde z`,
:math:`\tilde z \sim N(0, 1)` (non-centred) it is not. Variationally Inferred Parameterisation
interpolates with one centring :math:`c \in [0, 1]` per coordinate, fitted with the guide:

.. math:: \tilde z \sim N\big(c\,\mu,\ \sigma^{c}\big), \qquad
          z = \mu + \sigma^{1-c}\,(\tilde z - c\,\mu),

so :math:`c = 1` is the model as written and :math:`c = 0` the non-centred one. This is Pyro's own
``LocScaleReparam`` applied by ``AutoReparam`` to every latent site of a location-scale family with
real support (``Normal``, ``StudentT``, ``Cauchy``, ``Laplace``, ...; a ``TransformedDistribution``
such as ``LogNormal`` is first split into its base and transform). :func:`reparametrize` adds one
thing: each original site becomes a *deterministic* site of the new model, so draws, reports and
reference metrics are still of the model's own sites, and the auxiliary ``*_decentered`` /
``*_base`` sites are the ones the guide fits.

It changes the *model*, not the guide: :func:`pyro_nf.compare` applies it to every guide alike
(``reparam=``); the centrings are parameters of the model in the param store (``"<site>_centered"``).

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model():
    ...     log_s = pyro.sample("log_s", dist.Normal(0.0, 3.0))
    ...     pyro.sample("x", dist.Normal(0.0, (log_s / 2).exp()))
    >>> tr = pyro.poutine.trace(reparametrize(model, "learnable")).get_trace()
    >>> [n for n, s in tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]]  # latent sites
    ['log_s_decentered', 'x_decentered']
    >>> tr.nodes["x"]["infer"]["_deterministic"]
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
from pyro.infer.reparam.strategies import AutoReparam
from pyro.poutine.messenger import Messenger
from pyro.poutine.reparam_messenger import ReparamMessenger

from pyro_nf._util import isolated_rng

__all__ = ["REPARAMS", "model_sites", "reparametrize"]

#: What ``reparam=`` accepts: the centring ``c`` each choice fixes (``None``: learnt).
REPARAMS: dict[str, float | None] = {"learnable": None, "noncentred": 0.0}


class _MarkDeterministic(Messenger):
    """Outside a ``ReparamMessenger``: mark the sites it replaced by a ``Delta`` as deterministic."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.names:
            msg["infer"] = {**msg.get("infer", {}), "_deterministic": True}


class _Strategy(AutoReparam):
    """``AutoReparam`` that remembers which sites it reparametrised."""

    def __init__(self, centered: float | None, names: set[str]) -> None:
        super().__init__(centered=centered)
        self.names = names

    def configure(self, msg: dict) -> Any:
        reparam = super().configure(msg)
        if reparam is not None and not msg["is_observed"]:
            self.names.add(msg["name"])
        return reparam


def reparametrize(model: Callable, kind: str) -> Callable:
    """``model`` with every real-support location-scale latent site centred by a learnt ``c``
    (``kind="learnable"``) or non-centred (``kind="noncentred"``); its original sites stay in every
    trace as deterministic sites (see the module docstring)."""
    if kind not in REPARAMS:
        raise ValueError(f"reparam must be one of {sorted(REPARAMS)} or None; got {kind!r}")
    names: set[str] = set()
    strategy = _Strategy(REPARAMS[kind], names)

    @functools.wraps(model)
    def reparametrized(*args: Any, **kwargs: Any) -> Any:
        # the marker sits outside the reparam messenger, so it sees each message after the rewrite
        with _MarkDeterministic(names), ReparamMessenger(config=strategy):
            return model(*args, **kwargs)

    reparametrized.reparam = kind  # type: ignore[attr-defined]
    reparametrized.auxiliary = names  # type: ignore[attr-defined]
    return reparametrized


def model_sites(model: Callable, *args: Any, **kwargs: Any) -> set[str]:
    """Names of the sample sites of one trace of ``model`` (off the random stream)."""
    with isolated_rng():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    return {name for name, site in trace.nodes.items() if site["type"] == "sample"}
