"""Training: :func:`fit` (the SVI loop, its options, divergence guard and checkpoints), its errors, and
data-parallel fitting on ``torch.distributed`` (:class:`DataParallel`, :func:`shard`)."""

from pyro_nf.training.clipping import AdaptiveClip
from pyro_nf.training.distributed import DataParallel, shard
from pyro_nf.training.errors import CheckpointError, FitDivergedError, FitInputError
from pyro_nf.training.loop import STOP_REASONS, Converged, EarlyStop, FitResult, fit

__all__ = [
    "STOP_REASONS",
    "AdaptiveClip",
    "CheckpointError",
    "Converged",
    "DataParallel",
    "EarlyStop",
    "FitDivergedError",
    "FitInputError",
    "FitResult",
    "fit",
    "shard",
]
