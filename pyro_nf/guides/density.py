r"""Flows as likelihoods: a registered flow as the distribution of *observed* data.

.. math:: x = f_K \circ \dots \circ f_1(u), \quad u \sim N(0, I), \qquad
          \log p(x) = \log N\big(f^{-1}(x)\big) - \sum_k \log|\det J_{f_k}|,

the change-of-variables density that MAF (Papamakarios et al. 2017) was built for. Inside a Pyro
model::

    flow = FlowDensity(2, layers=("actnorm", "spline_coupling", "lu_linear", "spline_coupling"))
    flow.data_init(data)                       # ActNorm: standardise the data (optional)

    def model(data):
        pyro.module("flow", flow)              # its parameters join the param store
        with pyro.plate("data", len(data)):
            pyro.sample("x", flow.distribution(), obs=data)

Fitting ``model`` with an empty guide (or with a guide for the model's *other* latents) is then
maximum likelihood for the flow's parameters (and variational inference for the rest).

**Conditional densities** :math:`p(x \mid c)` (``context_dim = C > 0``): every coupling layer's
conditioner also reads the covariates :math:`c` (ActNorm, LU-linear and permutations ignore them),

.. math:: \log p(x \mid c) = \log N\big(f^{-1}(x; c)\big) - \sum_k \log|\det J_{f_k(\cdot;\,c)}|,

used as ``pyro.sample("x", flow.distribution(context=c), obs=x)`` with ``c`` of shape ``(N, C)``
(any batch shape broadcasting with the data's). Autoregressive layers take no context here.

Scoring data uses each layer's inverse, so every layer must have one (``has_inverse``): couplings,
``maf`` (one pass), ``iaf`` (:math:`D` sequential passes), ActNorm, LU-linear, splines; not
``planar``. Sampling uses the forward direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pyro.distributions import Normal, TransformedDistribution
from torch import nn

from pyro_nf._util import check_positive_int
from pyro_nf.transforms import ActNorm, make_transform
from pyro_nf.transforms.discrete import DiscreteCoupling

__all__ = ["DiscreteFlowDensity", "FlowDensity"]

LayerSpec = str | tuple[str, dict[str, Any]]

_DEFAULT_LAYERS = (
    "actnorm",
    "spline_coupling",
    "lu_linear",
    "spline_coupling",
    "lu_linear",
    "spline_coupling",
)


class FlowDensity(nn.Module):
    r"""A normalizing flow on :math:`\mathbb{R}^D` used as a density of observations.

    Args:
        input_dim: :math:`D`.
        layers: registered layer names (or ``(name, config)`` pairs), applied from the base noise
            :math:`u` towards the data :math:`x`. Coupling layers without an explicit ``parity``
            alternate parities in order. Default: ActNorm then three spline couplings with
            LU-linear layers between.
        context_dim: :math:`C > 0` makes the flow a conditional density :math:`p(x \mid c)`: each
            coupling layer's conditioner reads :math:`c` too (the other layers ignore it; the
            autoregressive ones cannot take it).
        **common: configuration passed to every layer that has a network (``hidden_dims``, ...).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> data = torch.randn(200, 2) * torch.tensor([3.0, 0.5])
        >>> flow = FlowDensity(2, layers=("actnorm", "affine_coupling", "affine_coupling"),
        ...                    hidden_dims=(16,)).data_init(data)
        >>> flow.distribution().log_prob(data).shape
        torch.Size([200])
        >>> flow.distribution().sample((5,)).shape
        torch.Size([5, 2])

        Conditional on a covariate :math:`c \in \mathbb{R}^1`:

        >>> cflow = FlowDensity(2, layers=("spline_coupling", "spline_coupling"), context_dim=1,
        ...                     hidden_dims=(16,))
        >>> c = torch.rand(200, 1)
        >>> cflow.log_prob(data, context=c).shape, cflow.distribution(context=c).sample().shape
        (torch.Size([200]), torch.Size([200, 2]))
    """

    def __init__(
        self,
        input_dim: int,
        layers: Sequence[LayerSpec] = _DEFAULT_LAYERS,
        *,
        context_dim: int = 0,
        **common: Any,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int("input_dim", input_dim)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"FlowDensity: context_dim must be a non-negative integer, got {context_dim!r}")
        self.context_dim = context_dim
        built = []
        parity = 0
        for spec in layers:
            name, cfg = (spec, {}) if isinstance(spec, str) else spec
            cfg = dict(cfg)
            if name.endswith("coupling"):
                cfg.setdefault("parity", parity)
                parity = 1 - parity
            if name.endswith("coupling") or name in ("iaf", "maf", "spline_autoregressive"):
                cfg = {**common, **cfg}
            if context_dim and name.endswith("coupling"):
                cfg.setdefault("context_dim", context_dim)
            elif context_dim and name in ("iaf", "maf", "spline_autoregressive"):
                raise ValueError(
                    f"FlowDensity: layer {name!r} takes no context; a conditional flow "
                    "(context_dim > 0) uses coupling layers (and ActNorm, 'lu_linear', 'permute')"
                )
            layer = make_transform(name, input_dim, **cfg)
            if not layer.has_inverse:
                raise ValueError(
                    f"FlowDensity: layer {name!r} has no inverse, so it cannot score observed data; "
                    "use couplings, 'maf', splines, ActNorm or 'lu_linear'"
                )
            built.append(layer)
        if not built:
            raise ValueError("FlowDensity needs at least one layer")
        self.layers = nn.ModuleList(built)
        self.register_buffer("_zeros", torch.zeros(input_dim))

    def _check_context(self, context: torch.Tensor | None) -> torch.Tensor | None:
        if self.context_dim and context is None:
            raise ValueError(
                f"this FlowDensity is conditional (context_dim={self.context_dim}): pass "
                f"context=... of shape (..., {self.context_dim})"
            )
        if not self.context_dim and context is not None:
            raise ValueError("this FlowDensity takes no context (built with context_dim=0)")
        if context is None:
            return None
        if (
            not isinstance(context, torch.Tensor)
            or context.dim() < 1
            or context.shape[-1] != self.context_dim
        ):
            got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"FlowDensity: context must have shape (..., {self.context_dim}), got {got}")
        return context.to(self._zeros)

    @torch.no_grad()
    def data_init(self, data: torch.Tensor, context: torch.Tensor | None = None) -> FlowDensity:
        """Data-dependent initialisation (Glow): each ActNorm standardises the batch that reaches
        it, mapping ``data`` back through the layers above it (at ``context``, for a conditional
        flow). Returns ``self``."""
        if data.dim() != 2 or data.shape[-1] != self.input_dim:
            raise ValueError(
                f"data_init expects data of shape (N, {self.input_dim}), got {tuple(data.shape)}"
            )
        context = self._check_context(context)
        v = data.to(self._zeros)
        for layer in reversed(self.layers):  # from the data side towards the base
            if isinstance(layer, ActNorm):
                # the ActNorm maps base-side u to data-side v: standardising v means its inverse
                # must send v to zero mean, unit variance, i.e. data_init of the inverse map
                sd, mean = v.std(0), v.mean(0)
                if not (sd > 0).all():
                    raise ValueError("data_init: a coordinate of the data is constant")
                layer.log_scale.copy_(torch.log(sd))
                layer.loc.copy_(mean)
            v, _ = layer.inverse_and_log_det(v, context if layer.context_dim else None)
        return self

    def distribution(self, context: torch.Tensor | None = None) -> TransformedDistribution:
        """The flow's distribution, for ``pyro.sample(..., obs=data)``: event shape ``(D,)``; for a
        conditional flow :math:`p(x \\mid c)` at ``context`` (shape ``(..., C)``), batch shape
        ``context.shape[:-1]``.

        The layers' one-entry caches are emptied first: observed data is the same tensor at every
        step, and a cache hit would return values (and graphs) of the previous step."""
        context = self._check_context(context)
        for layer in self.layers:
            layer._cached_x_y = (None, None)
            layer._ladj_cache = None
        batch = context.shape[:-1] if context is not None else torch.Size()
        base = Normal(self._zeros, torch.ones_like(self._zeros)).expand(batch + (self.input_dim,)).to_event(1)
        layers = list(self.layers) if context is None else [layer.condition(context) for layer in self.layers]
        return TransformedDistribution(base, layers)

    def log_prob(self, data: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`\\log p(x)` (or :math:`\\log p(x \\mid c)` at ``context``) of each row of ``data``
        (one inverse pass through every layer)."""
        return self.distribution(context).log_prob(data)


class DiscreteFlowDensity(nn.Module):
    r"""Discrete flow (Tran et al. 2019) as a likelihood of categorical vectors
    :math:`x \in \{0, \dots, K-1\}^D`: independent categoricals (learnable logits) pushed through
    ``num_flows`` :class:`~pyro_nf.transforms.discrete.DiscreteCoupling` layers (alternating halves),

    .. math:: \log p(x) = \sum_d \log \mathrm{Cat}\big(f^{-1}(x)_d;\ \pi_d\big)

    (no Jacobian: a bijection of a finite set). Use in a model with
    ``pyro.factor("x", flow.log_prob(data).sum())``. See the layer's docstring for what it cannot do
    (in particular it is no guide for enumerated discrete latents).

    Example:
        >>> flow = DiscreteFlowDensity(3, num_classes=4, hidden_dims=(8,))
        >>> x = torch.tensor([[0, 3, 1], [2, 2, 2]])
        >>> flow.log_prob(x).shape, flow.sample(5).shape
        (torch.Size([2]), torch.Size([5, 3]))
    """

    def __init__(
        self, input_dim: int, num_classes: int, num_flows: int = 2, hidden_dims: Sequence[int] = (32,)
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int("input_dim", input_dim)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        check_positive_int("num_flows", num_flows)
        self.base_logits = nn.Parameter(torch.zeros(input_dim, num_classes))
        self.layers = nn.ModuleList(
            DiscreteCoupling(input_dim, num_classes, hidden_dims, parity=k % 2) for k in range(num_flows)
        )

    def _one_hot(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype.is_floating_point or x.shape[-1:] != (self.input_dim,):
            raise ValueError(
                f"expected integer categories of shape (..., {self.input_dim}), got {x.dtype} "
                f"{tuple(x.shape)}"
            )
        if ((x < 0) | (x >= self.num_classes)).any():
            raise ValueError(f"categories must lie in 0..{self.num_classes - 1}")
        return nn.functional.one_hot(x, self.num_classes).to(self.base_logits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x)` of integer vectors ``x`` of shape ``(..., D)``."""
        v = self._one_hot(x)
        for layer in reversed(self.layers):
            v = layer.inverse(v)
        return (v * torch.log_softmax(self.base_logits, -1)).sum((-1, -2))

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` integer vectors drawn from the flow."""
        base = torch.distributions.Categorical(logits=self.base_logits).sample((num_samples,))
        v = nn.functional.one_hot(base, self.num_classes).to(self.base_logits)
        for layer in self.layers:
            v = layer(v)
        return v.argmax(-1)
