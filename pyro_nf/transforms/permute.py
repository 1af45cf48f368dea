r"""Fixed permutation of coordinates, :math:`y_i = x_{\pi(i)}`, with :math:`\log|\det J| = 0`.

Placed between autoregressive layers so that each sees a different variable order. pyro_nf's own
guides instead give consecutive MADE layers different orders (the same maths, no data movement);
this layer is for users composing their own stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from pyro_nf.transforms.base import FlowTransform
from pyro_nf.transforms.made import make_order


class Permute(FlowTransform):
    r"""Permutation :math:`y = x_{[\pi]}` of the last dimension.

    Args:
        input_dim: event dimension :math:`D`.
        permutation: ``"reversed"`` (default), ``"random"``, ``"natural"`` or an explicit permutation.

    Example:
        >>> Permute(3)(torch.tensor([1., 2., 3.]))
        tensor([3., 2., 1.])
    """

    volume_preserving = True
    constant_log_det: ClassVar[bool] = True

    def __init__(self, input_dim: int, permutation: str | Sequence[int] | torch.Tensor = "reversed") -> None:
        super().__init__(input_dim)
        perm = make_order(input_dim, permutation)
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., self.permutation], x.new_zeros(x.shape[:-1])

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y[..., self.inverse_permutation], y.new_zeros(y.shape[:-1])
