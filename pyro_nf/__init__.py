"""pyro_nf: normalizing-flow posteriors for Pyro, with ArviZ diagnostics.

Swap ``AutoNormal`` for :class:`AutoIAF`, :class:`AutoMAF` or :class:`AutoPlanar`, fit with SVI
(or :func:`fit`), and check with :func:`diagnose` / :func:`to_inference_data` whether the flow
found what mean-field missed.
"""

from .baselines import AutoDiagonal, AutoFullRank, AutoLowRank, AutoMeanField
from .guides import AutoFlow, AutoIAF, AutoMAF, AutoPlanar
from .registry import available_guides, make_guide, register_guide

__version__ = "0.1.0"

__all__ = [
    "AutoDiagonal", "AutoFlow", "AutoFullRank", "AutoIAF", "AutoLowRank", "AutoMAF",
    "AutoMeanField", "AutoPlanar", "available_guides", "make_guide", "register_guide",
]
