"""The exceptions a user of :func:`pyro_nf.fit` may need to catch (all exported from ``pyro_nf``)."""

from __future__ import annotations

__all__ = ["CheckpointError", "FitDivergedError", "FitInputError"]


class FitInputError(ValueError):
    """The model, its arguments or the guide cannot be fitted as given (the message says why)."""


class FitDivergedError(RuntimeError):
    """The divergence guard ran out of recoveries.

    Attributes:
        step: the step (0-based) whose loss or parameter update went non-finite.
        lr: the learning rate in use at that step.
        sites: latent sites whose guide draws, or whose log density in the model, were non-finite.
        params: names of parameters that were non-finite.
    """

    def __init__(self, message: str, *, step: int, lr: float, sites: list[str], params: list[str]) -> None:
        super().__init__(message)
        self.step, self.lr, self.sites, self.params = step, lr, sites, params


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, is not a pyro_nf checkpoint, or does not fit this fit."""
