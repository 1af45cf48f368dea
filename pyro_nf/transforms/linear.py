r"""Invertible linear map with an LU parametrisation (Glow's invertible 1x1 convolution).

.. math:: y = W x, \qquad W = P L U, \qquad L = I + c\,\mathrm{tril}(L_0, -1), \qquad
          U = c\,\mathrm{triu}(U_0, 1) + \mathrm{diag}(\mathrm{sign} \odot e^{c \log|s_0|}),

with :math:`P` a fixed permutation, :math:`L` unit lower triangular and :math:`U` upper triangular
with diagonal :math:`s`; the parameters are :math:`(L_0, U_0, \log|s_0|)` and :math:`c` is
``param_scale`` (1 by default). Adam moves every parameter by about its learning rate per step
whatever the gradient's size, so :math:`c < 1` makes :math:`W` move :math:`c` times as fast as the
couplings around it (:class:`~pyro_nf.guides.AutoGlow` uses :math:`c = 0.1`). On a flat vector
Glow's 1x1 convolution is exactly this :math:`D \times D` matrix. The log-determinant is free,
:math:`\log|\det W| = \sum_i \log|s_i|`; the inverse is two triangular solves,
:math:`x = U^{-1} L^{-1} P^\top y` (:math:`O(D^2)` per point, no matrix inverse formed).
:math:`W` is invertible for every parameter value.

At initialisation :math:`P = L = U = I` (with the default ``permutation="natural"``), so the layer
is exactly the identity; it learns a rotation-and-shear that mixes coordinates between coupling
layers.

References:
    Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions.
    https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from pyro_nf._util import check_positive_float
from pyro_nf.transforms.base import FlowTransform
from pyro_nf.transforms.made import make_order


class LULinear(FlowTransform):
    r"""Invertible linear layer :math:`y = P L U x`, the identity at initialisation.

    Args:
        input_dim: event dimension :math:`D`.
        permutation: the fixed :math:`P` as a variable order, ``(P v)_i = v_{\pi(i)}``:
            ``"natural"`` (identity, default), ``"reversed"``, ``"random"`` or a permutation.
        param_scale: :math:`c`, a positive number multiplying every parameter where it enters
            :math:`W` (a per-layer step-size scale under Adam; 1: the parameters are the entries).

    Example:
        >>> t = LULinear(3)
        >>> x = torch.randn(4, 3)
        >>> torch.equal(t(x), x)
        True
        >>> with torch.no_grad():
        ...     for p in (t.lower, t.upper, t.log_abs_diag):
        ...         _ = p.normal_()
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    constant_log_det: ClassVar[bool] = True

    def __init__(
        self,
        input_dim: int,
        permutation: str | Sequence[int] | torch.Tensor = "natural",
        param_scale: float = 1.0,
    ) -> None:
        scale = check_positive_float("param_scale", param_scale)
        super().__init__(input_dim)
        self.param_scale = scale
        perm = make_order(input_dim, permutation)
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))
        self.register_buffer("diag_sign", torch.ones(input_dim))
        self.lower = nn.Parameter(torch.zeros(input_dim, input_dim))  # strictly lower part used
        self.upper = nn.Parameter(torch.zeros(input_dim, input_dim))  # strictly upper part used
        self.log_abs_diag = nn.Parameter(torch.zeros(input_dim))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The triangular factors ``(L, U)``."""
        eye = torch.eye(self.input_dim, dtype=self.lower.dtype, device=self.lower.device)
        c = self.param_scale
        lower = torch.tril(c * self.lower, -1) + eye
        upper = torch.triu(c * self.upper, 1) + torch.diag(self.diag_sign * torch.exp(c * self.log_abs_diag))
        return lower, upper

    def weight(self) -> torch.Tensor:
        """The matrix :math:`W = P L U`."""
        lower, upper = self.factors()
        return (lower @ upper)[self.permutation]

    def _ladj(self, v: torch.Tensor) -> torch.Tensor:
        return (self.param_scale * self.log_abs_diag.sum()).expand(v.shape[:-1])

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight().T, self._ladj(x)

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self.factors()
        rows = y[..., self.inverse_permutation].reshape(-1, self.input_dim).T  # (D, N): L U x
        z = torch.linalg.solve_triangular(lower, rows, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, z, upper=True)
        return x.T.reshape(y.shape), self._ladj(y)

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, permutation={self.permutation.tolist()}, "
            f"param_scale={self.param_scale}"
        )


class FixedAffine(FlowTransform):
    r"""A fixed (not learned) affine map :math:`y = m + L x` with :math:`L` lower triangular.

    :math:`\log|\det J| = \sum_i \log|L_{ii}|` (constant); the inverse is one triangular solve. Flow
    guides put it after their layers to work in a *whitened* space: with :math:`(m, L)` the mean and
    Cholesky factor of a Gaussian approximation (e.g. Laplace's), the untrained guide is that
    Gaussian and every layer learns a correction in coordinates where the posterior is close to
    :math:`N(0, I)`. Not a registered layer: it has no learnable identity initialisation.

    Args:
        loc: :math:`m`, shape ``(D,)``.
        scale_tril: :math:`L`, shape ``(D, D)``, lower triangular with a non-zero diagonal.

    Example:
        >>> t = FixedAffine(torch.tensor([1.0, 2.0]), torch.tensor([[2.0, 0.0], [1.0, 0.5]]))
        >>> x = torch.tensor([1.0, 1.0])
        >>> t(x).tolist(), float(t.log_abs_det_jacobian(x, t(x)))
        ([3.0, 3.5], 0.0)
    """

    constant_log_det: ClassVar[bool] = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        dim = loc.shape[-1]
        if loc.shape != (dim,) or scale_tril.shape != (dim, dim):
            raise ValueError(
                f"need loc (D,) and scale_tril (D, D); got {tuple(loc.shape)}, {tuple(scale_tril.shape)}"
            )
        if not bool(torch.all(torch.diagonal(scale_tril) != 0)):
            raise ValueError("scale_tril must have a non-zero diagonal (an invertible map)")
        super().__init__(dim)
        self.register_buffer("loc", loc.detach().clone())
        self.register_buffer("scale_tril", torch.tril(scale_tril.detach()).clone())

    def _ladj(self, v: torch.Tensor) -> torch.Tensor:
        return torch.diagonal(self.scale_tril).abs().log().sum().expand(v.shape[:-1])

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc + x @ self.scale_tril.T, self._ladj(x)

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = (y - self.loc).reshape(-1, self.input_dim).T
        x = torch.linalg.solve_triangular(self.scale_tril, rows, upper=False)
        return x.T.reshape(y.shape), self._ladj(y)
