r"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015).

A feed-forward network :math:`h = \mathrm{MADE}(x) \in \mathbb{R}^{P \times D}` whose output for
variable :math:`i` depends only on the inputs that precede :math:`i` in a chosen variable order:

.. math:: \frac{\partial h_{p,i}}{\partial x_j} = 0 \quad\text{unless}\quad
          \mathrm{deg}(j) < \mathrm{deg}(i),

enforced by binary masks on the weights. Each input gets a degree (its 1-based rank in the
order), each hidden unit a degree :math:`m \in \{0, \dots, D-1\}`; a hidden unit sees inputs of
degree :math:`\le m` and an output of degree :math:`d` sees hidden units of degree :math:`< d`.
Hidden degrees are spread evenly over :math:`\{1, \dots, D-1\}` (or :math:`\{0\}` when
:math:`D = 1`), so widths below :math:`D` still give a valid, if coarser, autoregressive network.

References:
    Germain, Gregor, Murray & Larochelle (2015), MADE: Masked Autoencoder for Distribution
    Estimation. https://arxiv.org/abs/1502.03509
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def make_order(input_dim: int, order: str | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Return a permutation of ``range(input_dim)``: the variable order.

    Args:
        input_dim: number of variables :math:`D`.
        order: ``"natural"``, ``"reversed"``, ``"random"`` (drawn from torch's global generator)
            or an explicit permutation.
    """
    if isinstance(order, str):
        if order == "natural":
            return torch.arange(input_dim)
        if order == "reversed":
            return torch.arange(input_dim - 1, -1, -1)
        if order == "random":
            return torch.randperm(input_dim)
        raise ValueError(f"order must be 'natural', 'reversed', 'random' or a permutation, got {order!r}")
    perm = torch.as_tensor(order, dtype=torch.long)
    if perm.shape != (input_dim,) or not torch.equal(perm.sort().values, torch.arange(input_dim)):
        raise ValueError(f"order must be a permutation of range({input_dim}), got {order!r}")
    return perm


def _hidden_degrees(width: int, input_dim: int) -> torch.Tensor:
    if input_dim == 1:
        return torch.zeros(width, dtype=torch.long)
    # evenly spread over 1..D-1 (repeats when width > D-1; a subset when width < D-1)
    return 1 + (torch.arange(width) * (input_dim - 1)) // width


class MADE(nn.Module):
    r"""Masked autoregressive network :math:`\mathbb{R}^D \to \mathbb{R}^{P \times D}`.

    Args:
        input_dim: number of variables :math:`D`.
        hidden_dims: widths of the hidden layers (any positive widths, also below :math:`D`).
        num_outputs: :math:`P`, outputs per variable (2 for an affine layer: shift and log-scale).
        order: variable order, see :func:`make_order`.
        activation: hidden non-linearity.
        zero_output: initialise the output layer at zero, so the network's output is exactly 0.
        skip_connections: add direct (masked) input-to-output connections, fused into the output
            layer (one extra ``D`` columns in its matrix): outputs can depend linearly on their
            predecessors, which e.g. a funnel's log-scale needs.
        output_gain: constant multipliers of the output layer, as ``(hidden, direct)``: the
            columns reading the last hidden layer are multiplied by ``hidden``, the direct
            input-output columns and the bias by ``direct``. Default ``(1 / H, 1 / sqrt(D))``
            with ``H`` the last hidden width. With Adam every weight moves by about the learning
            rate per step, so an unscaled zero-initialised output layer moves each output by up
            to ``H + D`` learning rates per step: at ``lr = 0.1`` a few steps multiplied a
            4-layer IAF's scales by ``e^{15}``. With the default the hidden part moves an output
            by about one learning rate per step (a maximal-update parametrisation), while the
            direct connections, which carry a strong linear dependence such as a funnel's scale
            on its parent, still learn at a rate that does not shrink with the width.

    Example:
        >>> made = MADE(3, hidden_dims=(8,), num_outputs=2, order="reversed")
        >>> made(torch.zeros(5, 3)).shape
        torch.Size([5, 2, 3])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        num_outputs: int = 2,
        order: str | Sequence[int] | torch.Tensor = "natural",
        activation: type[nn.Module] = nn.ReLU,
        zero_output: bool = True,
        skip_connections: bool = True,
        output_gain: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        hidden_dims = tuple(hidden_dims)
        if not hidden_dims or any(not isinstance(h, int) or h < 1 for h in hidden_dims):
            raise ValueError(
                f"hidden_dims must be a non-empty sequence of positive integers, got {hidden_dims!r}"
            )
        if not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"num_outputs must be a positive integer, got {num_outputs!r}")
        self.input_dim, self.hidden_dims, self.num_outputs = input_dim, hidden_dims, num_outputs
        perm = make_order(input_dim, order)
        degrees_in = torch.empty(input_dim, dtype=torch.long)
        degrees_in[perm] = torch.arange(1, input_dim + 1)
        self.register_buffer("order", perm)
        self.register_buffer("degrees", degrees_in)

        dims = (input_dim, *hidden_dims)
        prev = degrees_in
        self.layers = nn.ModuleList()
        for i, width in enumerate(hidden_dims):
            deg = _hidden_degrees(width, input_dim)
            self.layers.append(nn.Linear(dims[i], width))
            self.register_buffer(f"mask{i}", (deg[:, None] >= prev[None, :]).to(torch.get_default_dtype()))
            prev = deg
        out_deg = degrees_in.repeat(num_outputs)
        # With skip connections the output layer reads the last hidden layer *and* the inputs:
        # the direct connections of Germain et al. (2015, Sec. 4), so an output may depend linearly
        # on every input that precedes it. One fused matrix: one parameter, one matmul.
        self.skip_connections = bool(skip_connections)
        extra = input_dim if self.skip_connections else 0
        self.output = nn.Linear(hidden_dims[-1] + extra, num_outputs * input_dim)
        mask_out = out_deg[:, None] > prev[None, :]
        if self.skip_connections:
            mask_out = torch.cat([mask_out, out_deg[:, None] > degrees_in[None, :]], dim=1)
        self.register_buffer("mask_out", mask_out.to(torch.get_default_dtype()))
        self.activation = activation()
        hidden_gain, direct_gain = (
            (1.0 / hidden_dims[-1], input_dim**-0.5) if output_gain is None else output_gain
        )
        self.output_gain = (float(hidden_gain), float(direct_gain))
        gain = torch.full((hidden_dims[-1] + extra,), float(hidden_gain))
        gain[hidden_dims[-1] :] = float(direct_gain)
        # the output mask with the gain folded in, formed once: one multiply per forward, as without a gain
        self.register_buffer("_mask_out_gain", (mask_out * gain).to(torch.get_default_dtype()))
        if zero_output:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

    def masks(self) -> list[torch.Tensor]:
        """The binary masks, input layer first; the output mask's last ``D`` columns are the
        direct input-to-output connections."""
        return [getattr(self, f"mask{i}") for i in range(len(self.layers))] + [self.mask_out]

    def masked_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(weight * mask, bias)`` for every layer. Form these once and reuse them across the
        sequential passes of an autoregressive inverse (see :meth:`apply_weights`)."""
        masks = self.masks()
        hidden = [(m.weight * mask, m.bias) for m, mask in zip(self.layers, masks[:-1], strict=True)]
        return [
            *hidden,
            (self.output.weight * self._mask_out_gain, self.output.bias * self.output_gain[1]),
        ]

    def apply_weights(
        self, weights: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor
    ) -> torch.Tensor:
        """Run the network with pre-masked ``weights`` (from :meth:`masked_weights`)."""
        h = x
        for w, b in weights[:-1]:
            h = self.activation(F.linear(h, w, b))
        w, b = weights[-1]
        if self.skip_connections:
            h = torch.cat([h, x], dim=-1)
        out = F.linear(h, w, b)
        return out.unflatten(-1, (self.num_outputs, self.input_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_weights(self.masked_weights(), x)

    def connectivity(self) -> torch.Tensor:
        """Boolean ``(D, D)`` matrix: ``[i, j]`` is True when output ``i`` may depend on input ``j``
        (``deg(j) < deg(i)``): the allowed Jacobian sparsity pattern."""
        return self.degrees[None, :] < self.degrees[:, None]

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, hidden_dims={self.hidden_dims}, "
            f"num_outputs={self.num_outputs}, skip_connections={self.skip_connections}"
        )
