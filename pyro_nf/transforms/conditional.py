r"""Conditional flow layers: a layer whose conditioner also reads a context :math:`c`, bound to a value.

A conditional layer :math:`y = f(x;\ c)` is a bijection of :math:`x` for every fixed context
:math:`c` (only the conditioner sees :math:`c`), with the log-det of that bijection,

.. math:: \log p(x \mid c) = \log N\big(f^{-1}(x; c)\big) - \log|\det J_{f(\cdot;\,c)}|.

:class:`ConditionedTransform` is the layer at one context, an ordinary
``torch.distributions.Transform`` for ``TransformedDistribution``; it is what
:meth:`pyro_nf.transforms.FlowTransform.condition` returns for a layer built with
``context_dim > 0`` (layers without a context return themselves). It holds no parameters of its
own: the layer's parameters are the ones trained.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Transform, constraints

__all__ = ["ConditionedTransform", "broadcast_context"]


def broadcast_context(
    v: torch.Tensor, context: torch.Tensor | None, context_dim: int, owner: str = "layer"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``context`` has shape ``(..., context_dim)`` and broadcast the batch shapes of ``v``
    ``(..., D)`` and ``context`` against each other.

    Example:
        >>> v, c = broadcast_context(torch.zeros(5, 1, 2), torch.zeros(3, 4), 4)
        >>> v.shape, c.shape
        (torch.Size([5, 3, 2]), torch.Size([5, 3, 4]))
    """
    if context is None:
        raise ValueError(
            f"{owner} is conditional (context_dim={context_dim}): pass a context of shape "
            f"(..., {context_dim}), e.g. layer.condition(context) or forward_and_log_det(x, context)"
        )
    if not isinstance(context, torch.Tensor) or context.dim() < 1 or context.shape[-1] != context_dim:
        shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise ValueError(f"{owner} expects a context of shape (..., {context_dim}), got {shape}")
    try:
        batch = torch.broadcast_shapes(v.shape[:-1], context.shape[:-1])
    except RuntimeError as err:
        raise ValueError(
            f"{owner}: batch shape {tuple(v.shape[:-1])} of the values does not broadcast with "
            f"batch shape {tuple(context.shape[:-1])} of the context"
        ) from err
    return v.expand(*batch, v.shape[-1]), context.to(v).expand(*batch, context_dim)


class ConditionedTransform(Transform):
    r"""A conditional flow layer at a fixed context: :math:`x \mapsto f(x;\ c)`.

    Args:
        layer: a :class:`~pyro_nf.transforms.FlowTransform` with ``context_dim > 0``.
        context: :math:`c`, shape ``(..., context_dim)``; broadcasts with the inputs' batch shape.

    Example:
        >>> from pyro_nf.transforms import AffineCoupling
        >>> layer = AffineCoupling(2, hidden_dims=(8,), context_dim=3)
        >>> t = layer.condition(torch.randn(4, 3))
        >>> x = torch.randn(4, 2)
        >>> torch.equal(t(x), x), t.log_abs_det_jacobian(x, t(x)).shape  # identity at init
        (True, torch.Size([4]))
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, layer: Any, context: torch.Tensor) -> None:
        super().__init__(cache_size=0)
        self.layer = layer
        self.context = context
        self._ladj_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def sign(self) -> int:  # type: ignore[override]
        return self.layer.sign

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y, ladj = self.layer.forward_and_log_det(x, self.context)
        self._ladj_cache = (x, y, ladj)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x, ladj = self.layer.inverse_and_log_det(y, self.context)
        self._ladj_cache = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log|det J|`` of :math:`f(\\cdot;\\ c)` at ``x``: the cached value for the pair just
        computed, else one forward pass."""
        cache = self._ladj_cache
        if cache is not None and x is cache[0] and y is cache[1]:
            return cache[2]
        return self.layer.forward_and_log_det(x, self.context)[1]

    def __repr__(self) -> str:
        return f"ConditionedTransform({self.layer!r}, context shape {tuple(self.context.shape)})"
