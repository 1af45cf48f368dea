"""Guide registry: one list of names shared by :func:`pyro_nf.compare`, the command line and
third parties.

Each entry is a factory ``(model, **kwargs) -> AutoGuide``; :func:`make_guide` records the name on
the guide (``guide.registry_name``).

Example:
    >>> from pyro_nf.registry import make_guide, available_guides
    >>> "maf" in available_guides()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro.infer.autoguide import AutoGuide

from .baselines import AutoDiagonal, AutoFullRank, AutoLowRank, AutoMeanField
from .guides import AutoIAF, AutoMAF, AutoPlanar

GuideFactory = Callable[..., AutoGuide]
_GUIDES: dict[str, GuideFactory] = {}


def register_guide(name: str) -> Callable[[GuideFactory], GuideFactory]:
    """Decorator registering a guide factory ``(model, **kwargs) -> AutoGuide`` under ``name``.

    Example:
        >>> from pyro.infer.autoguide import AutoLaplaceApproximation
        >>> @register_guide("laplace-example")
        ... def _laplace(model, **kwargs):
        ...     return AutoLaplaceApproximation(model, **kwargs)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"guide name must be a non-empty string, got {name!r}")

    def decorate(factory: GuideFactory) -> GuideFactory:
        if name in _GUIDES:
            raise ValueError(f"a guide named {name!r} is already registered")
        _GUIDES[name] = factory
        return factory
    return decorate


def make_guide(name: str, model: Callable, **kwargs: Any) -> AutoGuide:
    """Build the registered guide ``name`` for ``model`` with constructor options ``kwargs``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        factory = _GUIDES[name]
    except KeyError:
        raise ValueError(f"unknown guide {name!r}; known guides: "
                         f"{', '.join(available_guides())}") from None
    guide = factory(model, **kwargs)
    guide.registry_name = name
    return guide


def available_guides() -> list[str]:
    """Registered guide names, in registration order (baselines first, then flows)."""
    return list(_GUIDES)


for _name, _cls in (("meanfield", AutoMeanField), ("diagonal", AutoDiagonal),
                    ("fullrank", AutoFullRank), ("lowrank", AutoLowRank),
                    ("planar", AutoPlanar), ("iaf", AutoIAF), ("maf", AutoMAF)):
    register_guide(_name)(_cls)
