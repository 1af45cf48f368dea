"""The eager limit: a hand-written PyTorch training step for the same flow and model as pyro_nf's.

No Pyro at all: a masked (MADE) affine autoregressive flow in the IAF direction, written out with
``torch.nn.functional`` (the same architecture as ``pyro_nf.AutoIAF``: ``num_flows`` layers
alternating natural and reversed order, MADE ``D -> H -> ... -> 2D`` with ReLU, optional fused
skip connections, log-scale ``L tanh(s / L)``), a diagonal Normal base with softplus scale, the
model's log density written by hand, and one ``torch.optim.Adam`` over all parameters. Used by
``step_time.py`` as the floor an eager Pyro-based step can approach.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _masks(dim: int, hidden: Sequence[int], reverse: bool, skip: bool) -> list[torch.Tensor]:
    deg_in = torch.arange(dim, 0, -1) if reverse else torch.arange(1, dim + 1)
    masks, prev = [], deg_in
    for h in hidden:
        deg = torch.zeros(h, dtype=torch.long) if dim == 1 else 1 + (torch.arange(h) * (dim - 1)) // h
        masks.append((deg[:, None] >= prev[None, :]).float())
        prev = deg
    out = deg_in.repeat(2)
    mask = out[:, None] > prev[None, :]
    if skip:
        mask = torch.cat([mask, out[:, None] > deg_in[None, :]], dim=1)
    masks.append(mask.float())
    return masks


class EagerIAF(nn.Module):
    """``num_flows`` IAF layers over a diagonal Normal base; :meth:`rsample_log_q` draws ``(K, D)``."""

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        num_flows: int,
        skip: bool = False,
        max_log_scale: float = 5.0,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.dim, self.bound, self.skip = dim, max_log_scale, skip
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_scale = nn.Parameter(torch.full((dim,), math.log(math.expm1(init_scale))))
        self.layers = nn.ModuleList()
        for k in range(num_flows):
            masks = _masks(dim, hidden, k % 2 == 1, skip)
            dims = (dim, *hidden)
            lins = nn.ModuleList([nn.Linear(dims[i], h) for i, h in enumerate(hidden)])
            out = nn.Linear(hidden[-1] + (dim if skip else 0), 2 * dim)
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
            lins.append(out)
            layer = nn.Module()
            layer.lins = lins
            masks[-1] = masks[-1] / out.in_features  # MADE's output gain 1 / fan_in, folded in
            layer.gain = 1.0 / out.in_features
            for i, m in enumerate(masks):
                layer.register_buffer(f"m{i}", m)
            self.layers.append(layer)

    def rsample_log_q(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scale = F.softplus(self.raw_scale)
        eps = torch.randn(k, self.dim)
        x = self.loc + scale * eps
        log_q = (-0.5 * eps**2 - 0.5 * math.log(2 * math.pi) - scale.log()).sum(-1)
        for layer in self.layers:
            lins = layer.lins
            h = x
            for i, lin in enumerate(lins[:-1]):
                h = F.relu(F.linear(h, lin.weight * getattr(layer, f"m{i}"), lin.bias))
            if self.skip:
                h = torch.cat([h, x], dim=-1)
            out = F.linear(
                h, lins[-1].weight * getattr(layer, f"m{len(lins) - 1}"), lins[-1].bias * layer.gain
            )
            shift, raw = out[..., : self.dim], out[..., self.dim :]
            log_scale = self.bound * torch.tanh(raw / self.bound)
            x = x * torch.exp(log_scale) + shift
            log_q = log_q - log_scale.sum(-1)
        return x, log_q


def gaussian_log_joint(y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x ~ N(0, 1)^D``, ``y_n ~ N(x, 1)``: log p(x, y) per row of ``x`` (shape ``(K, D)``)."""
    c = 0.5 * math.log(2 * math.pi)

    def log_joint(x: torch.Tensor) -> torch.Tensor:
        prior = (-0.5 * x**2 - c).sum(-1)
        lik = (-0.5 * (y[:, None, :] - x) ** 2 - c).sum((0, -1))
        return prior + lik

    return log_joint


def logistic_log_joint(
    features: torch.Tensor, labels: torch.Tensor, batch: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``w ~ N(0, 1)^D``, ``y_n ~ Bernoulli(sigmoid(X_n w))``, optionally on a fresh random
    minibatch of ``batch`` rows each call with the likelihood scaled by ``N / batch``."""
    n = features.shape[0]
    c = 0.5 * math.log(2 * math.pi)

    def log_joint(w: torch.Tensor) -> torch.Tensor:
        if batch is None:
            x, y, scale = features, labels, 1.0
        else:
            idx = torch.randperm(n)[:batch]
            x, y, scale = features[idx], labels[idx], n / batch
        logits = w @ x.T  # (K, N)
        lik = -F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none")
        return (-0.5 * w**2 - c).sum(-1) + scale * lik.sum(-1)

    return log_joint


def make_step(
    flow: EagerIAF, log_joint: Callable[[torch.Tensor], torch.Tensor], k: int = 1, lr: float = 1e-3
) -> Callable[[], float]:
    """One ELBO step: draw ``k``, loss ``-mean(log p - log q)``, backward, Adam."""
    opt = torch.optim.Adam(flow.parameters(), lr=lr)

    def step() -> float:
        z, log_q = flow.rsample_log_q(k)
        loss = -(log_joint(z) - log_q).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step
