"""Training: :func:`fit` (the SVI loop, its options, divergence guard and checkpoints) and its errors."""

from pyro_nf.training.errors import CheckpointError, FitDivergedError, FitInputError
from pyro_nf.training.loop import STOP_REASONS, EarlyStop, FitResult, fit

__all__ = [
    "STOP_REASONS",
    "CheckpointError",
    "EarlyStop",
    "FitDivergedError",
    "FitInputError",
    "FitResult",
    "fit",
]
