r"""The conditioner network of coupling layers: an MLP whose output starts at exactly zero.

.. math:: h(x) = W_{\mathrm{out}}\,[\,a(\dots a(W_1 x + b_1)\dots);\ x\,] + b_{\mathrm{out}}
          \in \mathbb{R}^{P \times n},

with :math:`W_{\mathrm{out}}, b_{\mathrm{out}}` initialised at zero, so :math:`h \equiv 0` at
initialisation and a coupling layer built on it is exactly the identity. The optional skip
connection (the ``; x`` above, fused into the output layer) lets an output depend linearly on the
conditioning inputs, as a funnel's log-scale does on the log-scale coordinate.

With no conditioning inputs (``in_features = 0``, a coupling layer on a single coordinate) the
network is a learnable constant: one zero-initialised bias, broadcast to the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_hidden_dims(hidden_dims: Sequence[int]) -> tuple[int, ...]:
    """Validate and return ``hidden_dims`` as a tuple of positive integers."""
    dims = tuple(hidden_dims)
    if not dims or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in dims):
        raise ValueError(
            f"hidden_dims must be a non-empty sequence of positive integers, got {hidden_dims!r}"
        )
    return dims


class ZeroMLP(nn.Module):
    r"""MLP :math:`\mathbb{R}^{m} \to \mathbb{R}^{P \times n}` whose output is exactly 0 at
    initialisation.

    Args:
        in_features: :math:`m`, the number of conditioning inputs (may be 0).
        num_params: :math:`P`, parameters per output coordinate.
        out_features: :math:`n`, output coordinates.
        hidden_dims: hidden widths.
        activation: hidden non-linearity.
        skip_connections: fuse a linear input-to-output map into the output layer.
        input_scale: the scale of the inputs the first layer is initialised for: its weights start
            at PyTorch's default divided by it, so the hidden units' kinks (:math:`-b_j / w_j`)
            start spread over ``input_scale`` times the default range (see also
            :meth:`scale_inputs`).

    Example:
        >>> net = ZeroMLP(3, num_params=2, out_features=4, hidden_dims=(8,))
        >>> net(torch.randn(5, 3)).abs().max().item()
        0.0
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 2, 4])
    """

    def __init__(
        self,
        in_features: int,
        num_params: int,
        out_features: int,
        hidden_dims: Sequence[int] = (32, 32),
        activation: type[nn.Module] = nn.ReLU,
        skip_connections: bool = True,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)) or not input_scale > 0:
            raise ValueError(f"input_scale must be a positive number, got {input_scale!r}")
        self.input_scale = float(input_scale)
        self.hidden_dims = check_hidden_dims(hidden_dims)
        self.in_features, self.num_params, self.out_features = in_features, num_params, out_features
        self.skip_connections = bool(skip_connections)
        self.layers = nn.ModuleList()
        if in_features == 0:  # unconditional: a learnable constant
            self.constant = nn.Parameter(torch.zeros(num_params * out_features))
            return
        dims = (in_features, *self.hidden_dims)
        for i, width in enumerate(self.hidden_dims):
            self.layers.append(nn.Linear(dims[i], width))
        with torch.no_grad():
            self.layers[0].weight.div_(self.input_scale)
        extra = in_features if self.skip_connections else 0
        self.output = nn.Linear(self.hidden_dims[-1] + extra, num_params * out_features)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.activation = activation()

    @torch.no_grad()
    def scale_inputs(self, scales: torch.Tensor) -> None:
        r"""Divide the first layer's weight column of input :math:`i` by ``scales[i]``: the network
        then computes at :math:`x` what it computed at :math:`x / s` before (the output layer, the
        skip connection included, is untouched), i.e. its hidden units are set for inputs of
        scales :math:`s`. A zero-output network stays exactly zero.

        Example:
            >>> net = ZeroMLP(2, num_params=1, out_features=1, hidden_dims=(4,))
            >>> w = net.layers[0].weight.clone()
            >>> net.scale_inputs(torch.tensor([10.0, 1.0]))
            >>> torch.allclose(net.layers[0].weight[:, 0] * 10, w[:, 0])
            True
        """
        if not self.layers:
            return
        if scales.shape != (self.in_features,) or not bool((scales > 0).all()):
            raise ValueError(f"scales must be {self.in_features} positive numbers, got {scales!r}")
        self.layers[0].weight.div_(scales.to(self.layers[0].weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (self.num_params, self.out_features)
        if self.in_features == 0:
            return self.constant.expand(*x.shape[:-1], -1).unflatten(-1, shape)
        h = x
        for layer in self.layers:
            h = self.activation(layer(h))
        if self.skip_connections:
            h = torch.cat([h, x], dim=-1)
        return self.output(h).unflatten(-1, shape)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_params={self.num_params}, "
            f"out_features={self.out_features}, hidden_dims={self.hidden_dims}, "
            f"skip_connections={self.skip_connections}"
        )
