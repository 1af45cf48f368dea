r"""Discrete bipartite flow layer for categorical vectors (Tran et al. 2019), location shifts only.

A vector :math:`x \in \{0, \dots, K-1\}^D` (as one-hot, shape ``(..., D, K)``) is split by a mask
into a conditioning part :math:`x_c` and a transformed part :math:`x_t`:

.. math:: y_c = x_c, \qquad y_t = (x_t + \mu(x_c)) \bmod K, \qquad
          x_t = (y_t - \mu(y_c)) \bmod K,

with :math:`\mu(x_c) = \mathrm{argmax}_k\, h_k(x_c)` for a network :math:`h`. A discrete bijection
has no Jacobian: :math:`\log p(y) = \log p_{\mathrm{base}}(f^{-1}(y))`. The argmax has no gradient,
so training uses the straight-through estimator: the forward value is the one-hot argmax, the
backward pass that of :math:`\mathrm{softmax}(h / \tau)`. The shift of a one-hot vector by a
one-hot :math:`\mu` is a circular convolution, which is what carries that gradient.

What it can and cannot do: it models dependence between categorical coordinates (a base of
independent categoricals composed with shifts that depend on other coordinates), but it is *not* a
guide for enumerated discrete latent sites (Pyro sums those out exactly, and a discrete flow has no
reparametrised samples), it has no scale (a multiplicative shift needs a prime :math:`K`), and its
gradient is biased (straight-through).

Not a :class:`~pyro_nf.transforms.FlowTransform` (those act on :math:`\mathbb{R}^D`), so it is not in
the transform registry; :class:`pyro_nf.guides.density.DiscreteFlowDensity` stacks these layers.

References:
    Tran, Vafa, Agrawal, Dinh & Poole (2019), Discrete Flows: Invertible Generative Models of
    Discrete Data. https://arxiv.org/abs/1905.10347
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyro_nf.transforms.coupling import coupling_mask

__all__ = ["DiscreteCoupling", "circular_shift", "straight_through_argmax"]


def straight_through_argmax(logits: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """One-hot argmax of ``logits`` over the last dim, with the gradient of ``softmax(logits / T)``.

    Example:
        >>> straight_through_argmax(torch.tensor([0.1, 2.0, -1.0]))
        tensor([0., 1., 0.])
    """
    soft = torch.softmax(logits / temperature, dim=-1)
    hard = nn.functional.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft)
    return hard + (soft - soft.detach())  # exactly the one-hot value, the softmax gradient


def circular_shift(x: torch.Tensor, shift: torch.Tensor, sign: int = 1) -> torch.Tensor:
    r"""One-hot :math:`(x + \mathrm{sign} \cdot s) \bmod K` for one-hot ``x`` and ``shift`` (``(..., K)``):
    the circular convolution :math:`y_k = \sum_j x_j\, s_{(\mathrm{sign}(k - j)) \bmod K}`.

    Example:
        >>> eye = torch.eye(4)
        >>> circular_shift(eye[3], eye[2]).argmax().item(), circular_shift(eye[1], eye[2], -1).argmax().item()
        (1, 3)
    """
    k = x.shape[-1]
    idx = torch.arange(k, device=x.device)
    table = (sign * (idx[:, None] - idx[None, :])) % k  # [k, j]
    return (x.unsqueeze(-2) * shift[..., table]).sum(-1)


class DiscreteCoupling(nn.Module):
    r"""Bipartite discrete flow layer :math:`y_t = (x_t + \mu(x_c)) \bmod K` on one-hot inputs.

    Args:
        input_dim: :math:`D`.
        num_classes: :math:`K`.
        hidden_dims: widths of the network :math:`h`.
        mask, parity: which coordinates are shifted (see
            :func:`~pyro_nf.transforms.coupling_mask`).
        temperature: the straight-through softmax temperature.

    Example:
        >>> layer = DiscreteCoupling(3, num_classes=4, hidden_dims=(8,))
        >>> x = nn.functional.one_hot(torch.tensor([[0, 3, 1]]), 4).float()
        >>> torch.equal(layer.inverse(layer(x)), x)
        True
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden_dims: Sequence[int] = (32,),
        mask: str | int = "alternate",
        parity: int = 0,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        transformed = coupling_mask(input_dim, mask, parity)
        self.register_buffer("transformed_idx", torch.nonzero(transformed).flatten())
        self.register_buffer("conditioning_idx", torch.nonzero(~transformed).flatten())
        self.num_classes, self.temperature = num_classes, float(temperature)
        n_c, n_t = len(self.conditioning_idx), len(self.transformed_idx)
        dims = (max(n_c, 1) * num_classes, *hidden_dims)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], n_t * num_classes))
        self.net = nn.Sequential(*layers)

    def _shift(self, v: torch.Tensor) -> torch.Tensor:
        cond = v[..., self.conditioning_idx, :]
        if cond.shape[-2] == 0:  # nothing to condition on: a learnable constant shift
            cond = torch.zeros(*v.shape[:-2], 1, self.num_classes, dtype=v.dtype, device=v.device)
        logits = self.net(cond.flatten(-2)).unflatten(-1, (len(self.transformed_idx), self.num_classes))
        return straight_through_argmax(logits, self.temperature)

    def _couple(self, v: torch.Tensor, sign: int) -> torch.Tensor:
        shifted = circular_shift(v[..., self.transformed_idx, :], self._shift(v), sign)
        return v.index_copy(-2, self.transformed_idx, shifted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`y = f(x)` on one-hot ``x`` of shape ``(..., D, K)``."""
        return self._couple(x, 1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`x = f^{-1}(y)`."""
        return self._couple(y, -1)
