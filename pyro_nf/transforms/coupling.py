r"""Coupling layers: NICE's additive coupling and RealNVP's affine coupling.

A binary mask splits the coordinates into a conditioning part :math:`x_c` (left unchanged) and a
transformed part :math:`x_t`; a network of :math:`x_c` parametrises an elementwise bijection of
:math:`x_t`:

.. math:: y_c = x_c, \qquad y_t = g(x_t;\ \theta(x_c)), \qquad
          \log|\det J| = \sum_{i \in t} \log g'(x_i;\ \theta_i(x_c)).

The Jacobian is block triangular, so the log-det is the sum of the elementwise log-derivatives,
and because :math:`\theta` depends only on :math:`x_c = y_c`, *both* directions take one pass:
sampling and the density of an arbitrary value cost the same (unlike IAF and MAF).

- **additive** (NICE, Dinh, Krueger & Bengio 2014): :math:`g(x) = x + \mu(x_c)`, volume preserving;
  NICE adds a diagonal scaling layer (:class:`~pyro_nf.transforms.actnorm.Scale`).
- **affine** (RealNVP, Dinh, Sohl-Dickstein & Bengio 2016):
  :math:`g(x) = x\,\sigma(x_c) + \mu(x_c)` with the bounded log-scale
  :math:`\log\sigma = L\tanh(s/L)` of :class:`~pyro_nf.transforms.AffineAutoregressive`
  (:math:`\sigma \in [e^{-L}, e^{L}]`, exactly 1 when the network outputs 0).

The conditioner's output layer starts at zero, so every coupling layer starts as exactly the
identity. Consecutive layers must transform different coordinates: alternate ``parity`` (or put a
permutation or an invertible linear layer between them).

Masks: ``"alternate"`` transforms the even positions (``parity=0``) or the odd ones
(``parity=1``); ``"half"`` the first :math:`\lceil D/2\rceil` (``parity=0``) or the last
:math:`\lfloor D/2 \rfloor` (``parity=1``); an integer :math:`b` transforms the positions whose
bit :math:`b` equals ``parity`` (``0`` is ``"alternate"``); or pass a boolean vector (True =
transformed). Cycling :math:`b` through :math:`0, \dots, \lceil\log_2 D\rceil - 1` with both
parities puts every pair of coordinates on opposite sides in some layer (two indices differ in
some bit), so every coordinate is conditioned on every other one within
:math:`2\lceil\log_2 D\rceil` layers; alternating halves alone never condition coordinates 0 and
2 on each other. With
:math:`D = 1` there is nothing to condition on: the layer transforms the single coordinate by an
*unconditional* elementwise bijection (learnable constants), whatever the parity.

**Conditional couplings** (``context_dim = C > 0``): the conditioner also reads a context
:math:`c \in \mathbb{R}^C`, :math:`\theta = \theta(x_c, c)`, so the layer is a bijection of
:math:`x` for every fixed :math:`c` with the same triangular log-det; flows of such layers are
conditional densities :math:`p(x \mid c)`. Pass the context with ``forward_and_log_det(x, context)``
or bind it with :meth:`~pyro_nf.transforms.FlowTransform.condition`; the batch shapes of :math:`x`
and :math:`c` broadcast.

References:
    Dinh, Krueger & Bengio (2014), NICE: Non-linear Independent Components Estimation.
    https://arxiv.org/abs/1410.8516

    Dinh, Sohl-Dickstein & Bengio (2016), Density Estimation using Real NVP.
    https://arxiv.org/abs/1605.08803
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from pyro_nf.transforms.base import FlowTransform
from pyro_nf.transforms.conditional import broadcast_context
from pyro_nf.transforms.conditioner import ZeroMLP


def coupling_mask(
    input_dim: int, mask: str | int | Sequence[bool] | torch.Tensor = "alternate", parity: int = 0
) -> torch.Tensor:
    """Boolean vector of length ``input_dim``: True where a coupling layer transforms.

    Example:
        >>> coupling_mask(5, "alternate", parity=1)
        tensor([False,  True, False,  True, False])
        >>> coupling_mask(5, "half")
        tensor([ True,  True,  True, False, False])
        >>> coupling_mask(5, 1, parity=1)  # bit 1 of the index set: positions 2, 3
        tensor([False, False,  True,  True, False])
    """
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    idx = torch.arange(input_dim)
    if isinstance(mask, (str, int)) and not isinstance(mask, bool):
        if mask == "alternate":
            mask = 0
        if isinstance(mask, int):
            if mask < 0 or (input_dim > 1 and 2**mask >= input_dim):
                raise ValueError(
                    f"mask bit {mask!r} splits nothing for input_dim={input_dim}: it "
                    f"must satisfy 0 <= bit and 2**bit < input_dim"
                )
            transformed = (idx >> mask) % 2 == parity
        elif mask == "half":
            first = idx < (input_dim + 1) // 2
            transformed = first if parity == 0 else ~first
        else:
            raise ValueError(
                f"mask must be 'alternate', 'half', a bit index or a boolean vector, got {mask!r}"
            )
        if input_dim == 1:  # nothing to condition on: transform the coordinate unconditionally
            transformed = torch.ones(1, dtype=torch.bool)
        return transformed
    transformed = torch.as_tensor(mask)
    if transformed.dtype != torch.bool or transformed.shape != (input_dim,):
        raise ValueError(f"mask must be a boolean vector of length {input_dim}, got {mask!r}")
    if not transformed.any():
        raise ValueError("mask transforms no coordinate (it must have at least one True entry)")
    return transformed.clone()


class Coupling(FlowTransform):
    r"""Base of the coupling layers: the mask, the conditioner and the one-pass directions.

    Subclasses set ``num_params`` (parameters per transformed coordinate) and implement
    ``_elementwise(x_t, params)`` and ``_elementwise_inverse(y_t, params)``, each returning the
    transformed values and the summed log-derivative; ``params`` has shape ``(..., P, n_t)``.

    Args:
        input_dim: event dimension :math:`D`.
        hidden_dims: conditioner hidden widths.
        mask: ``"alternate"``, ``"half"``, a bit index or a boolean vector (True = transformed).
        parity: 0 or 1, which half a string mask transforms.
        activation: conditioner non-linearity.
        skip_connections: linear input-to-output connections in the conditioner.
        context_dim: :math:`C`, the size of a context vector the conditioner also reads (0: none).
        input_scale: the conditioner's first layer is initialised for inputs of this scale
            (:class:`~pyro_nf.transforms.conditioner.ZeroMLP`).
    """

    num_params: ClassVar[int] = 0

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (32, 32),
        mask: str | int | Sequence[bool] | torch.Tensor = "alternate",
        parity: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        skip_connections: bool = True,
        context_dim: int = 0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__(input_dim)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer, got {context_dim!r}")
        self.context_dim = context_dim
        transformed = coupling_mask(input_dim, mask, parity)
        self.register_buffer("transformed_idx", torch.nonzero(transformed).flatten())
        self.register_buffer("conditioning_idx", torch.nonzero(~transformed).flatten())
        self.net = ZeroMLP(
            len(self.conditioning_idx) + context_dim,
            self.num_params,
            len(self.transformed_idx),
            hidden_dims,
            activation=activation,
            skip_connections=skip_connections,
            input_scale=input_scale,
        )

    def _elementwise(self, x_t: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # abstract: subclasses implement it

    def _elementwise_inverse(
        self, y_t: torch.Tensor, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # abstract: subclasses implement it

    def _couple(self, v: torch.Tensor, fn, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = v[..., self.conditioning_idx]
        if self.context_dim:
            v, context = broadcast_context(v, context, self.context_dim, type(self).__name__)
            h = torch.cat([v[..., self.conditioning_idx], context], dim=-1)
        elif context is not None:
            raise ValueError(f"{type(self).__name__} was built without a context (context_dim=0)")
        params = self.net(h)
        out_t, ladj = fn(v[..., self.transformed_idx], params)
        return v.index_copy(-1, self.transformed_idx, out_t), ladj

    def _forward_and_ladj(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(x, self._elementwise, context)

    def _inverse_and_ladj(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(y, self._elementwise_inverse, context)

    def extra_repr(self) -> str:
        extra = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"input_dim={self.input_dim}, transformed={self.transformed_idx.tolist()}{extra}"


class AdditiveCoupling(Coupling):
    r"""NICE's additive coupling :math:`y_t = x_t + \mu(x_c)`, :math:`\log|\det J| = 0`.

    Example:
        >>> t = AdditiveCoupling(4, hidden_dims=(8,))
        >>> x = torch.randn(3, 4)
        >>> torch.equal(t(x), x)   # exactly the identity at initialisation
        True
    """

    num_params: ClassVar[int] = 1
    volume_preserving = True
    constant_log_det: ClassVar[bool] = True

    def _elementwise(self, x_t, params):
        return x_t + params[..., 0, :], x_t.new_zeros(x_t.shape[:-1])

    def _elementwise_inverse(self, y_t, params):
        return y_t - params[..., 0, :], y_t.new_zeros(y_t.shape[:-1])


class AffineCoupling(Coupling):
    r"""RealNVP's affine coupling :math:`y_t = x_t \sigma(x_c) + \mu(x_c)`,
    :math:`\log\sigma = L\tanh(s/L)`, :math:`\log|\det J| = \sum_t \log\sigma_t`.

    Args:
        max_log_scale: :math:`L`, the bound on each coordinate's log-scale.
        **kwargs: see :class:`Coupling`.

    Example:
        >>> t = AffineCoupling(4, hidden_dims=(8,), parity=1)
        >>> x = torch.randn(3, 4)
        >>> y, ladj = t.forward_and_log_det(x)
        >>> torch.equal(y, x), torch.equal(ladj, torch.zeros(3))
        (True, True)
    """

    num_params: ClassVar[int] = 2

    def __init__(
        self, input_dim: int, hidden_dims: Sequence[int] = (32, 32), *, max_log_scale: float = 5.0, **kwargs
    ) -> None:
        if (
            isinstance(max_log_scale, bool)
            or not isinstance(max_log_scale, (int, float))
            or not max_log_scale > 0
        ):
            raise ValueError(f"max_log_scale must be a positive number, got {max_log_scale!r}")
        super().__init__(input_dim, hidden_dims, **kwargs)
        self.max_log_scale = float(max_log_scale)

    def _shift_log_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bound = self.max_log_scale
        return params[..., 0, :], bound * torch.tanh(params[..., 1, :] / bound)

    def _elementwise(self, x_t, params):
        shift, log_scale = self._shift_log_scale(params)
        return x_t * torch.exp(log_scale) + shift, log_scale.sum(-1)

    def _elementwise_inverse(self, y_t, params):
        shift, log_scale = self._shift_log_scale(params)
        return (y_t - shift) * torch.exp(-log_scale), log_scale.sum(-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_log_scale={self.max_log_scale}"
