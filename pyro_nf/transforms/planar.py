r"""Planar flow (Rezende & Mohamed 2015).

.. math:: f(z) = z + \hat u \tanh(w^\top z + b), \qquad
          \log|\det J_f(z)| = \log\left|1 + (1 - \tanh^2(w^\top z + b))\, w^\top \hat u\right|.

:math:`f` is invertible iff :math:`w^\top \hat u \ge -1`. We reparametrise a free vector :math:`u`
as

.. math:: \hat u = u + \big(m(w^\top u) - w^\top u\big) \frac{w}{\|w\|^2},
          \qquad m(a) = (1 - 10^{-4})\,\mathrm{ELU}(a), \quad
          \mathrm{ELU}(a) = \begin{cases} a & a > 0 \\ e^a - 1 & a \le 0\end{cases}

so :math:`w^\top \hat u = m(w^\top u) > -1 + 10^{-4}` always (strictly invertible, with a bounded
log-det even where :math:`e^a` underflows). Unlike Rezende & Mohamed's
:math:`m(a) = -1 + \log(1 + e^a)`, :math:`m(0) = 0` here, so :math:`u = 0` gives
:math:`\hat u = 0` *exactly*: the layer starts as the identity, bit for bit. (With the softplus
:math:`m`, :math:`u = 0` maps to :math:`\hat u = (\log 2 - 1) w / \|w\|^2 \neq 0`.)

The inverse has no closed form: the layer scores only its own samples (``has_inverse = False``).

References:
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.
    https://arxiv.org/abs/1505.05770
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from pyro_nf.transforms.base import FlowTransform

# w.u_hat = _MARGIN * ELU(w.u) >= -(1 - 1e-4): strictly inside the invertible region, so the
# log-det is bounded below by log(1e-4) instead of reaching -inf when exp(w.u) underflows.
_MARGIN = 1.0 - 1e-4


class Planar(FlowTransform):
    r"""Planar bijection :math:`z + \hat u \tanh(w^\top z + b)`, the identity at initialisation.

    Args:
        input_dim: event dimension :math:`D`.
        init_w_scale: standard deviation of the random initial :math:`w` (times :math:`1/\sqrt D`).

    Example:
        >>> t = Planar(3)
        >>> z = torch.randn(10, 3)
        >>> torch.equal(t(z), z)
        True
    """

    has_inverse: ClassVar[bool] = False

    def __init__(self, input_dim: int, init_w_scale: float = 1.0) -> None:
        super().__init__(input_dim)
        self.u = nn.Parameter(torch.zeros(input_dim))
        self.w = nn.Parameter(torch.randn(input_dim) * (init_w_scale / math.sqrt(input_dim)))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        r"""The constrained :math:`\hat u` with :math:`w^\top \hat u > -1`."""
        wu = self.w @ self.u
        m = _MARGIN * F.elu(wu)  # > -1 + 1e-4 even where exp(wu) underflows
        return self.u + (m - wu) * self.w / (self.w @ self.w).clamp_min(1e-30)

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u_hat = self.u_hat()
        t = torch.tanh(x @ self.w + self.b)
        y = x + t.unsqueeze(-1) * u_hat
        ladj = torch.log1p((1 - t * t) * (self.w @ u_hat))
        return y, ladj
