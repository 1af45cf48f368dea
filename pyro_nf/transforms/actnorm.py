r"""Elementwise affine layers: NICE's diagonal scaling and Glow's ActNorm.

- :class:`Scale` (Dinh, Krueger & Bengio 2014, Sec. 3.3): :math:`y = x \odot e^{s}`,
  :math:`\log|\det J| = \sum_i s_i`; the scaling matrix that lets NICE's volume-preserving
  additive couplings change volume.
- :class:`ActNorm` (Kingma & Dhariwal 2018, Sec. 3.1): :math:`y = x \odot e^{s} + b`,
  :math:`\log|\det J| = \sum_i s_i`. For variational inference it starts at the identity
  (:math:`s = b = 0`); for density fitting :meth:`ActNorm.data_init` sets :math:`s, b` so that a
  batch of inputs is mapped to zero mean and unit variance per coordinate (Glow's data-dependent
  initialisation).

Both are exactly the identity at initialisation (:math:`x \cdot 1 + 0 = x` bit for bit) and
invertible in one pass.

References:
    Dinh, Krueger & Bengio (2014), NICE: Non-linear Independent Components Estimation.
    https://arxiv.org/abs/1410.8516

    Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions.
    https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from pyro_nf.transforms.base import FlowTransform


class Scale(FlowTransform):
    r"""Learnable diagonal scaling :math:`y = x \odot e^{s}`, :math:`s` initialised at 0.

    Example:
        >>> t = Scale(3)
        >>> x = torch.randn(2, 3)
        >>> torch.equal(t(x), x)
        True
    """

    constant_log_det: ClassVar[bool] = True

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        self.log_scale = nn.Parameter(torch.zeros(input_dim))

    def _ladj(self, v: torch.Tensor) -> torch.Tensor:
        return self.log_scale.sum().expand(v.shape[:-1])

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * torch.exp(self.log_scale), self._ladj(x)

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y * torch.exp(-self.log_scale), self._ladj(y)


class ActNorm(FlowTransform):
    r"""Per-coordinate affine map :math:`y = x \odot e^{s} + b`, the identity at initialisation.

    Example:
        >>> t = ActNorm(2)
        >>> data = torch.randn(500, 2) * torch.tensor([3.0, 0.5]) + 7.0
        >>> y = t.data_init(data)(data)
        >>> bool(y.mean(0).abs().max() < 1e-5), bool((y.std(0) - 1).abs().max() < 1e-5)
        (True, True)
    """

    constant_log_det: ClassVar[bool] = True

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        self.log_scale = nn.Parameter(torch.zeros(input_dim))
        self.loc = nn.Parameter(torch.zeros(input_dim))

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> ActNorm:
        r"""Set :math:`s = -\log \mathrm{sd}(x)`, :math:`b = -\bar x\, e^{s}` so that this batch
        ``x`` of shape ``(N, D)`` (``N >= 2``) maps to zero mean and unit (sample) variance per
        coordinate. Returns ``self``.

        Raises:
            ValueError: ``x`` is not ``(N, D)`` with ``N >= 2``, is not finite, or has a constant
                coordinate.
        """
        if x.dim() != 2 or x.shape[-1] != self.input_dim or x.shape[0] < 2:
            raise ValueError(
                f"ActNorm.data_init expects a batch of shape (N >= 2, {self.input_dim}), got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("ActNorm.data_init: the batch has non-finite values")
        x = x.to(self.loc)
        sd = x.std(0)
        if not (sd > 0).all():
            bad = torch.nonzero(~(sd > 0)).flatten().tolist()
            raise ValueError(f"ActNorm.data_init: coordinates {bad} are constant in the batch")
        self.log_scale.copy_(-torch.log(sd))
        self.loc.copy_(-x.mean(0) / sd)
        return self

    def _ladj(self, v: torch.Tensor) -> torch.Tensor:
        return self.log_scale.sum().expand(v.shape[:-1])

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * torch.exp(self.log_scale) + self.loc, self._ladj(x)

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (y - self.loc) * torch.exp(-self.log_scale), self._ladj(y)
