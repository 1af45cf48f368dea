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

Every model takes its observed data as a keyword that may be ``None`` (prior predictive), names its
plates (they become ArviZ dims), uses ``.to_event`` for vector sites, and runs under an outer
vectorised particle plate. ``pyro_nf.examples.funnel`` (etc.) is the model function; each model's
module is private (``pyro_nf.examples._funnel``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro_nf._registry import Registry
from pyro_nf.examples._banana import banana, make_banana_example
from pyro_nf.examples._data import Example
from pyro_nf.examples._eight_schools import (
    eight_schools_centered,
    eight_schools_noncentered,
    make_eight_schools_centered_example,
    make_eight_schools_noncentered_example,
)
from pyro_nf.examples._funnel import funnel, make_funnel_example
from pyro_nf.examples._german_credit import german_credit, make_german_credit_example
from pyro_nf.examples._radon import make_radon_example, radon

__all__ = [
    "EXAMPLES",
    "Example",
    "available_examples",
    "banana",
    "eight_schools_centered",
    "eight_schools_noncentered",
    "funnel",
    "german_credit",
    "get_example",
    "radon",
    "register_example",
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
