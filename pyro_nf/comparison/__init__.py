"""Comparison: several guides fitted on one model with one budget, the :class:`Comparison` result,
references and their distances, plots and the report; the one fit-and-evaluate pipeline.

Re-exports what the command line needs from the layers below (guide names, fit errors)."""

from pyro_nf.comparison.pipeline import FittedGuide, fit_and_evaluate, to_inference_data_restarts
from pyro_nf.comparison.reference import Reference, latent_supports
from pyro_nf.comparison.result import Comparison
from pyro_nf.comparison.run import (
    DEFAULT_FIT_KWARGS,
    DEFAULT_GUIDES,
    DEFAULT_NUM_STEPS,
    DEFAULT_TIME_BUDGET,
    compare,
)
from pyro_nf.guides import available_guides
from pyro_nf.guides.registry import GUIDES, RECOMMENDED_GUIDE
from pyro_nf.training import FitInputError

__all__ = [
    "GUIDES",
    "RECOMMENDED_GUIDE",
    "DEFAULT_FIT_KWARGS",
    "DEFAULT_GUIDES",
    "DEFAULT_NUM_STEPS",
    "DEFAULT_TIME_BUDGET",
    "Comparison",
    "FitInputError",
    "FittedGuide",
    "Reference",
    "available_guides",
    "compare",
    "fit_and_evaluate",
    "latent_supports",
    "to_inference_data_restarts",
]
