"""Guides: flow guides and Gaussian baselines on one contract, and the name -> factory registry."""

from pyro_nf.guides.baselines import AutoDiagonal, AutoFullRank, AutoLowRank, AutoMeanField
from pyro_nf.guides.coupling import AutoGlow, AutoNICE, AutoRealNVP
from pyro_nf.guides.density import DiscreteFlowDensity, FlowDensity
from pyro_nf.guides.flows import AutoFlow, AutoIAF, AutoMAF, AutoPlanar
from pyro_nf.guides.registry import RECOMMENDED_GUIDE, available_guides, make_guide, register_guide
from pyro_nf.guides.spline_flow import AutoNSF
from pyro_nf.transforms import NotInvertibleError

__all__ = [
    "AutoDiagonal",
    "AutoFlow",
    "AutoFullRank",
    "AutoGlow",
    "AutoIAF",
    "AutoLowRank",
    "AutoMAF",
    "AutoMeanField",
    "AutoNICE",
    "AutoNSF",
    "AutoPlanar",
    "AutoRealNVP",
    "DiscreteFlowDensity",
    "FlowDensity",
    "NotInvertibleError",
    "RECOMMENDED_GUIDE",
    "available_guides",
    "make_guide",
    "register_guide",
]
