"""The exceptions a user of :func:`pyro_nf.fit` may need to catch (all exported from ``pyro_nf``), and
the rule telling a diverging step's exception from a bug in the model."""

from __future__ import annotations

import re

import torch

__all__ = ["CheckpointError", "FitDivergedError", "FitInputError", "is_divergence_error"]


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


def is_divergence_error(err: Exception) -> bool:
    """Whether an exception from a step means divergence (a distribution rejecting a parameter or
    value, a nan/inf, or a failed factorisation) rather than a bug in the model."""
    if isinstance(err, torch.linalg.LinAlgError):
        return True
    text = str(err)
    return isinstance(err, ValueError) and (
        "Expected parameter" in text
        or "Expected value argument" in text
        or re.search(r"\b(nan|inf)\b", text) is not None
    )
