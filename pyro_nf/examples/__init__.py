r"""Built-in example models with data and trusted reference posteriors.

>>> from pyro_nf.examples import available_examples, get_example
>>> "funnel" in available_examples()
True
>>> ex = get_example("eight_schools_centered")
>>> sorted(ex.reference)
['mu', 'tau', 'theta']
>>> ex.model(**ex.data)  # one joint draw; pass y=None for the prior predictive

Examples (latent sites with shapes; reference):

- ``funnel``: ``log_scale`` (), ``x`` (9,); exact (closed form, sampler, log density).
- ``banana``: ``x0`` (), ``x1`` (); exact (closed form, sampler, log density).
- ``eight_schools_centered``: ``mu``, ``tau``, ``theta`` (8,); posteriordb NUTS, 1,000 draws.
- ``eight_schools_noncentered``: ``mu``, ``tau``, ``theta_trans`` (8,), deterministic ``theta``
  (8,); the same reference.
- ``german_credit``: ``w`` (25,); Inference Gym NUTS means and sds.
- ``radon``: ``county_effect_mean``, ``county_effect_scale``, ``county_effect`` (85,),
  ``weight`` (3,), ``log_radon_scale``; Inference Gym NUTS means and sds.
- ``kilpisjarvi``: ``alpha``, ``beta``, ``sigma`` (improper flat prior); posteriordb NUTS, 1,000
  draws.
- ``sblrc_blr``: ``beta`` (5,), ``sigma``; posteriordb NUTS, 1,000 draws.
- ``arK``: ``alpha``, ``beta`` (5,), ``sigma``; posteriordb NUTS, 1,000 draws.
- ``gp_pois_regr``: ``rho``, ``alpha``, ``f_tilde`` (11,), deterministic ``f`` (11,); posteriordb
  NUTS, 1,000 draws.
- ``low_dim_gauss_mix``: ``mu`` (2,, ordered), ``sigma`` (2,), ``theta``; posteriordb NUTS, 1,000
  draws.
- ``stochastic_volatility``: ``persistence_of_volatility``, ``mean_log_volatility``,
  ``white_noise_shock_scale``, ``log_volatility`` (100,); Inference Gym NUTS means and sds.

Every model takes its observed data as a keyword that may be ``None`` (prior predictive), names its
plates (they become ArviZ dims), uses ``.to_event`` for vector sites, and runs under an outer
vectorised particle plate. Two exceptions to "prior predictive": ``kilpisjarvi``'s flat prior on
``sigma`` is improper, so it has none (forward draws of ``sigma`` are a placeholder); ``arK`` is
conditional on the lagged series, so ``y=None`` draws one-step-ahead values. ``pyro_nf.examples.funnel``
(etc.) is the model function; each model's module is private (``pyro_nf.examples._funnel``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro_nf._registry import Registry
from pyro_nf.examples._ark import ark, make_ark_example
from pyro_nf.examples._banana import banana, make_banana_example
from pyro_nf.examples._data import Example
from pyro_nf.examples._eight_schools import (
    eight_schools_centered,
    eight_schools_noncentered,
    make_eight_schools_centered_example,
    make_eight_schools_noncentered_example,
)
from pyro_nf.examples._funnel import funnel, make_funnel_example
from pyro_nf.examples._gauss_mix import low_dim_gauss_mix, make_low_dim_gauss_mix_example
from pyro_nf.examples._german_credit import german_credit, make_german_credit_example
from pyro_nf.examples._gp_pois_regr import gp_pois_regr, make_gp_pois_regr_example
from pyro_nf.examples._kilpisjarvi import kilpisjarvi, make_kilpisjarvi_example
from pyro_nf.examples._radon import make_radon_example, radon
from pyro_nf.examples._sblrc_blr import make_sblrc_blr_example, sblrc_blr
from pyro_nf.examples._stochastic_volatility import make_stochastic_volatility_example, stochastic_volatility

__all__ = [
    "EXAMPLES",
    "Example",
    "ark",
    "available_examples",
    "banana",
    "eight_schools_centered",
    "eight_schools_noncentered",
    "funnel",
    "german_credit",
    "get_example",
    "gp_pois_regr",
    "kilpisjarvi",
    "low_dim_gauss_mix",
    "radon",
    "register_example",
    "sblrc_blr",
    "stochastic_volatility",
]

#: The example registry: name -> builder ``() -> Example``, easy and exact first.
EXAMPLES: Registry[Callable[[], Example]] = Registry("example")
for _name, _builder in (
    ("funnel", make_funnel_example),
    ("banana", make_banana_example),
    ("eight_schools_centered", make_eight_schools_centered_example),
    ("eight_schools_noncentered", make_eight_schools_noncentered_example),
    ("german_credit", make_german_credit_example),
    ("radon", make_radon_example),
    ("kilpisjarvi", make_kilpisjarvi_example),
    ("sblrc_blr", make_sblrc_blr_example),
    ("arK", make_ark_example),
    ("gp_pois_regr", make_gp_pois_regr_example),
    ("low_dim_gauss_mix", make_low_dim_gauss_mix_example),
    ("stochastic_volatility", make_stochastic_volatility_example),
):
    EXAMPLES.register(_name, _builder)


def register_example(name: str, builder: Callable[[], Example] | None = None) -> Any:
    """Register ``builder() -> Example`` under ``name`` (usable as a decorator)."""
    return EXAMPLES.register(name, builder)


def available_examples() -> list[str]:
    """Names accepted by :func:`get_example`, in registry order (easy and exact first)."""
    return EXAMPLES.names()


def get_example(name: str) -> Example:
    """Build the named example; its tensors are new on every call, in torch's current default dtype.

    Args:
        name: One of :func:`available_examples`.

    Returns:
        The :class:`Example`.

    Raises:
        ValueError: If ``name`` is unknown; the message lists the available names.
    """
    return EXAMPLES.make(name)
