"""pyro_nf: normalizing-flow posteriors for Pyro, with ArviZ diagnostics.

Swap ``AutoNormal`` for :class:`AutoIAF`, :class:`AutoMAF` or :class:`AutoPlanar`, fit with
:func:`fit` (or Pyro's SVI), and check with :func:`diagnose` / :func:`to_inference_data` whether
the flow found what mean-field missed; :func:`compare` does it all for several guides at once.

Note: ``pyro_nf.fit`` is the function; its module is importable as ``pyro_nf.fit`` via
``from pyro_nf.fit import FitResult``.
"""

from ._version import __version__
from .arviz import importance_resample, to_inference_data, to_inference_data_restarts
from .baselines import AutoDiagonal, AutoFullRank, AutoLowRank, AutoMeanField
from .compare import Comparison, Reference, compare
from .diagnostics import Diagnosis, diagnose
from .fit import EarlyStop, FitResult, fit
from .guides import AutoFlow, AutoIAF, AutoMAF, AutoPlanar
from .registry import available_guides, make_guide, register_guide

__all__ = [
    "__version__",
    "AutoDiagonal", "AutoFlow", "AutoFullRank", "AutoIAF", "AutoLowRank", "AutoMAF",
    "AutoMeanField", "AutoPlanar", "Comparison", "Diagnosis", "EarlyStop", "FitResult",
    "Reference", "available_guides", "compare", "diagnose", "fit", "importance_resample",
    "make_guide", "register_guide", "to_inference_data", "to_inference_data_restarts",
]
