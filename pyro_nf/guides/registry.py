"""Guide registry: one list of names shared by :func:`pyro_nf.compare`, the command line and
third parties.

Each entry is a factory ``(model, **kwargs) -> AutoGuide``; :func:`make_guide` records the name on
the guide (``guide.registry_name``).

Example:
    >>> from pyro_nf.guides.registry import make_guide, available_guides
    >>> "maf" in available_guides()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro.infer.autoguide import AutoGuide

from pyro_nf._registry import Registry
from pyro_nf.guides.baselines import AutoDiagonal, AutoFullRank, AutoLowRank, AutoMeanField
from pyro_nf.guides.coupling import AutoGlow, AutoNICE, AutoRealNVP
from pyro_nf.guides.flows import AutoIAF, AutoMAF, AutoPlanar
from pyro_nf.guides.spline_flow import AutoNSF

__all__ = ["GUIDES", "RECOMMENDED_GUIDE", "available_guides", "make_guide", "register_guide"]

#: The flow guide to use without choosing: best on ``benchmarks/accuracy.py`` at fit()'s defaults (README).
RECOMMENDED_GUIDE: str = "realnvp"

GuideFactory = Callable[..., AutoGuide]
#: The guide registry.
GUIDES: Registry[GuideFactory] = Registry("guide")


def register_guide(name: str) -> Callable[[GuideFactory], GuideFactory]:
    """Decorator registering a guide factory ``(model, **kwargs) -> AutoGuide`` under ``name``.

    Example:
        >>> from pyro.infer.autoguide import AutoLaplaceApproximation
        >>> @register_guide("laplace-example")
        ... def _laplace(model, **kwargs):
        ...     return AutoLaplaceApproximation(model, **kwargs)
        >>> "laplace-example" in available_guides()
        True
        >>> GUIDES.unregister("laplace-example")
    """
    return GUIDES.register(name)


def make_guide(name: str, model: Callable, **kwargs: Any) -> AutoGuide:
    """Build the registered guide ``name`` for ``model`` with constructor options ``kwargs``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    guide = GUIDES.make(name, model, **kwargs)
    guide.registry_name = name
    return guide


def available_guides() -> list[str]:
    """Registered guide names, in registration order (baselines first, then flows)."""
    return GUIDES.names()


for _name, _cls in (
    ("meanfield", AutoMeanField),
    ("diagonal", AutoDiagonal),
    ("fullrank", AutoFullRank),
    ("lowrank", AutoLowRank),
    ("planar", AutoPlanar),
    ("iaf", AutoIAF),
    ("maf", AutoMAF),
    ("nice", AutoNICE),
    ("realnvp", AutoRealNVP),
    ("glow", AutoGlow),
    ("nsf", AutoNSF),
):
    register_guide(_name)(_cls)
