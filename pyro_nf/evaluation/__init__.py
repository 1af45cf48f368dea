"""Evaluation: guide draws scored under the model, diagnostics (PSIS k-hat, ESS, IW-ELBO, verdict) and the
ArviZ bridge."""

from pyro_nf.evaluation.bridge import importance_resample, stack_chains, to_inference_data
from pyro_nf.evaluation.diagnostics import Diagnosis, diagnose

__all__ = ["Diagnosis", "diagnose", "importance_resample", "stack_chains", "to_inference_data"]
