r"""Adaptive gradient-norm clipping: ``fit()``'s guard against the rare draw that throws a flow off.

A flow guide fitted by SVI sees, every few thousand steps, a draw far in a tail where
:math:`\log q \gg \log p` (on Neal's funnel a step's loss of 70 where the steps around it read 0.1):
its gradient is tens of times the usual norm, and Adam turns it into a coordinated move of every
parameter at once. Measured on RealNVP at fit()'s recipe (``benchmarks/family_accuracy.py`` models,
seed 6 of the 10-D funnel): one such step at step 6,700 moved the parameters 9x the median step and
cut the log-scale sd ratio from 0.89 to 0.30; it took 1,600 steps to recover. The same happened on
the banana (seed 4, step 7,100: x1's sd ratio 0.96 to 0.62).

:class:`AdaptiveClip` rescales such a gradient to ``factor`` times the median norm of the last
``window`` steps' gradients (their norms before clipping, so a lasting change of scale is followed
within ``window / 2`` steps):

.. math:: g_t \leftarrow g_t \cdot \min\Big(1, \frac{c \,\mathrm{median}(\|g_{t-w}\|, \dots,
   \|g_{t-1}\|)}{\|g_t\|}\Big),

with :math:`\|\cdot\|` the Euclidean norm over all of the fit's parameters. Its direction is kept;
only its weight in Adam's moments shrinks. This is AutoClip's idea (Seetharaman et al. 2020, who clip
at a percentile of the whole history) with a moving window, since a fit's gradient norms fall by
orders of magnitude between its start and its end.

References:
    Seetharaman, Wichern, Pardo & Le Roux (2020), AutoClip: Adaptive Gradient Clipping for Source
    Separation Networks. https://arxiv.org/abs/2007.14469

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> clip = GradClipper(AdaptiveClip(factor=3.0, window=4, min_history=4), [p])
    >>> for _ in range(4):
    ...     p.grad = torch.tensor([1.0, 0.0]); _ = clip()
    >>> p.grad = torch.tensor([30.0, 40.0]); clip()  # norm 50 > 3 x median 1: rescaled to norm 3
    True
    >>> [round(v, 4) for v in p.grad.tolist()], clip.num_clipped
    ([1.8, 2.4], 1)
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["AdaptiveClip", "GradClipper", "resolve_clip"]


@dataclass(frozen=True)
class AdaptiveClip:
    """Clip each step's gradient norm at ``factor`` times the median of the last ``window`` norms.

    Args:
        factor: the multiple of the recent median norm above which a gradient is rescaled (> 1).
        window: how many recent steps' norms the median is taken over.
        min_history: no clipping until this many norms are known (the first steps of each call).
    """

    factor: float = 3.0
    window: int = 100
    min_history: int = 20

    def __post_init__(self) -> None:
        ok = isinstance(self.factor, int | float) and not isinstance(self.factor, bool)
        if not (ok and math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"AdaptiveClip factor must be a finite number > 1; got {self.factor!r}")
        for name in ("window", "min_history"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AdaptiveClip {name} must be an integer >= 1; got {value!r}")
        if self.min_history > self.window:
            raise ValueError(
                f"AdaptiveClip min_history ({self.min_history}) cannot exceed window ({self.window})"
            )


def resolve_clip(grad_clip: AdaptiveClip | bool | None) -> AdaptiveClip | None:
    """``fit(grad_clip=)`` as a rule or ``None``: ``True`` is ``AdaptiveClip()``, ``False`` is ``None``."""
    if grad_clip is True:
        return AdaptiveClip()
    if grad_clip is False or grad_clip is None:
        return None
    if not isinstance(grad_clip, AdaptiveClip):
        raise ValueError(f"grad_clip must be None, a bool or an AdaptiveClip; got {grad_clip!r}")
    return grad_clip


class GradClipper:
    """Applies an :class:`AdaptiveClip` rule to the gradients left in ``params``' ``.grad`` (``rule=None``:
    does nothing).

    Call it after the gradients are computed (and, in a data-parallel fit, averaged over the
    ranks) and before the optimiser steps; it returns whether it rescaled them. Non-finite norms
    are left to the divergence guard and kept out of the history.
    """

    def __init__(self, rule: AdaptiveClip | None, params: list[torch.Tensor]) -> None:
        self.rule, self.params = rule, params
        self.history: deque[float] = deque(maxlen=1 if rule is None else rule.window)
        self.num_clipped = 0

    def __call__(self) -> bool:
        if self.rule is None:
            return False
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return False
        with torch.no_grad():
            norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        if not math.isfinite(norm):
            return False
        clipped = False
        if len(self.history) >= self.rule.min_history:
            threshold = self.rule.factor * statistics.median(self.history)
            if norm > threshold:
                with torch.no_grad():
                    torch._foreach_mul_(grads, threshold / norm)
                self.num_clipped += 1
                clipped = True
        self.history.append(norm)
        return clipped

    def after(self, loss_and_grads: Callable[..., Any]) -> Callable[..., Any]:
        """``loss_and_grads`` (a function leaving the gradients in ``.grad``) followed by this clip."""

        @functools.wraps(loss_and_grads)
        def clipped(*args: Any, **kwargs: Any) -> Any:
            out = loss_and_grads(*args, **kwargs)
            self()
            return out

        return clipped

    def state_dict(self) -> dict:
        """The history and count, for checkpoints (plain data)."""
        return {"history": list(self.history), "num_clipped": self.num_clipped}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        history = [float(v) for v in state["history"]]
        self.history = deque(history[-self.history.maxlen :], maxlen=self.history.maxlen)
        self.num_clipped = int(state["num_clipped"])
