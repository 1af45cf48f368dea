"""pyro_nf: normalizing-flow posteriors for Pyro, with ArviZ diagnostics.

Swap ``AutoNormal`` for :class:`AutoIAF`, :class:`AutoMAF` or :class:`AutoPlanar`, fit with
:func:`fit` (or Pyro's SVI), and check with :func:`diagnose` / :func:`to_inference_data` whether
the flow found what mean-field missed; :func:`compare` does it all for several guides at once.

The subpackages are the layers of the design, lowest first: ``transforms`` (bijections),
``guides`` (autoguides and their registry), ``training`` (:func:`fit`), ``evaluation``
(diagnostics, ArviZ bridge), ``comparison`` (:func:`compare`, report), ``cli`` (``pyro-nf``), and
``examples`` (built-in models with reference posteriors).
"""

__version__ = "0.3.0"

from pyro_nf.comparison import (  # noqa: E402
    Comparison,
    FittedGuide,
    Reference,
    compare,
    fit_and_evaluate,
    to_inference_data_restarts,
)
from pyro_nf.evaluation import Diagnosis, diagnose, importance_resample, to_inference_data  # noqa: E402
from pyro_nf.guides import (  # noqa: E402
    RECOMMENDED_GUIDE,
    AutoDiagonal,
    AutoFlow,
    AutoFullRank,
    AutoGlow,
    AutoIAF,
    AutoLowRank,
    AutoMAF,
    AutoMeanField,
    AutoNICE,
    AutoNSF,
    AutoPlanar,
    AutoRealNVP,
    available_guides,
    make_guide,
    register_guide,
)
from pyro_nf.training import (  # noqa: E402
    AdaptiveClip,
    CheckpointError,
    Converged,
    DataParallel,
    EarlyStop,
    FitDivergedError,
    FitInputError,
    FitResult,
    fit,
    shard,
)
from pyro_nf.transforms import NotInvertibleError, available_transforms, register_transform  # noqa: E402

__all__ = [
    "__version__",
    "RECOMMENDED_GUIDE",
    "AdaptiveClip",
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
    "CheckpointError",
    "Comparison",
    "Converged",
    "DataParallel",
    "Diagnosis",
    "EarlyStop",
    "FitDivergedError",
    "FitInputError",
    "FitResult",
    "FittedGuide",
    "NotInvertibleError",
    "Reference",
    "available_guides",
    "available_transforms",
    "compare",
    "diagnose",
    "fit",
    "fit_and_evaluate",
    "importance_resample",
    "make_guide",
    "register_guide",
    "register_transform",
    "shard",
    "to_inference_data",
    "to_inference_data_restarts",
]
