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


def _parity(perm: list[int]) -> int:
    """+1 for an even permutation, -1 for an odd one (from its number of cycles)."""
    seen, cycles = [False] * len(perm), 0
    for start in range(len(perm)):
        if not seen[start]:
            cycles += 1
            i = start
            while not seen[i]:
                seen[i] = True
                i = perm[i]
    return -1 if (len(perm) - cycles) % 2 else 1


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
        self.sign = _parity(perm.tolist())  # det of the permutation matrix: +1 even, -1 odd

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., self.permutation], x.new_zeros(x.shape[:-1])

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y[..., self.inverse_permutation], y.new_zeros(y.shape[:-1])
