r"""Gaussian baseline guides meeting the same contract as the flows.

Thin subclasses of Pyro's guides, with the same maths, adding what pyro_nf guarantees for every
guide in the registry: enumerated discrete sites are left to ``TraceEnum_ELBO`` (Pyro's own raise),
clear errors for sites a guide cannot serve, a set-up that does not consume the random stream, and
``load_state_dict`` into a never-called guide (Pyro's own cannot).

============  ================================  =============================================
registry      class                             posterior over unconstrained latents
============  ================================  =============================================
meanfield     :class:`AutoMeanField`            independent Normal per site (``AutoNormal``)
diagonal      :class:`AutoDiagonal`             :math:`\mathcal N(\mu, \mathrm{diag}\,\sigma^2)`
fullrank      :class:`AutoFullRank`             :math:`\mathcal N(\mu, L L^\top)`
lowrank       :class:`AutoLowRank`              :math:`\mathcal N(\mu, W W^\top + \mathrm{diag}\,\sigma^2)`
============  ================================  =============================================
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroModule, PyroParam
from torch import nn
from torch.distributions import biject_to, transform_to

from pyro_nf.guides.contract import _ContinuousMixin, _ContractMixin
from pyro_nf.guides.laplace import choose_start, guide_start, set_constrained

_SUFFIX = "_unconstrained"


class _ParamSpecMixin(_ContinuousMixin):
    """Materialise an ``AutoContinuous`` baseline's parameters from a state dict's shapes."""

    _param_constraints: ClassVar[dict[str, constraints.Constraint | None]] = {}

    def _materialise(self, state_dict: dict[str, torch.Tensor]) -> None:
        for name, constraint in self._param_constraints.items():
            key = name if constraint is None else name + _SUFFIX
            if key not in state_dict:
                raise KeyError(f"{type(self).__name__}: state dict has no {key!r} entry")
            value = state_dict[key]
            if constraint is None:
                setattr(self, name, nn.Parameter(torch.zeros_like(value)))
            else:
                setattr(self, name, PyroParam(transform_to(constraint)(value.detach().clone()), constraint))


class AutoMeanField(_ContractMixin, AutoNormal):
    r"""Mean-field baseline: an independent Normal per latent site (Pyro's ``AutoNormal`` maths).

    Supports latent sites local to subsampled plates (it keeps one loc/scale per datum).
    ``has_log_prob`` is False: it has no packed latent vector to score.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0., 1.))
        >>> sorted(AutoMeanField(model)())
        ['x']
    """

    has_log_prob: ClassVar[bool] = False
    supports_subsampled_latents: ClassVar[bool] = True

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
    ) -> None:
        super().__init__(
            model, init_loc_fn=init_loc_fn, init_scale=float(init_scale), create_plates=create_plates
        )
        self._init_contract(
            {
                "init_scale": float(init_scale),
                "init_loc_fn": getattr(init_loc_fn, "__name__", repr(init_loc_fn)),
            }
        )

    def init_to_laplace(self, *args: Any, **kwargs: Any) -> str:
        r"""Start at the model's MAP with the mean-field optimum of its Laplace Gaussian,
        :math:`\sigma_i = H_{ii}^{-1/2}`, where that beats the guide's own start
        (:mod:`pyro_nf.guides.laplace`); returns a note saying which start was kept."""
        start, note = guide_start(self, args, kwargs)
        if start is None:
            return note
        names = [name for name, _ in self.prototype_trace.iter_stochastic_nodes()]
        parts = [self._get_loc_and_scale(name) for name in names]
        own_loc = torch.cat([loc.detach().reshape(-1) for loc, _ in parts])
        own_scale = torch.cat([scale.detach().reshape(-1) for _, scale in parts])
        scale = torch.diagonal(start.precision).rsqrt()
        better, note = choose_start(start, (start.loc, torch.diag(scale)), (own_loc, torch.diag(own_scale)))
        if better:
            offset = 0
            for name, (loc, _) in zip(names, parts, strict=True):
                n = loc.numel()
                set_constrained(self.locs, name, start.loc[offset : offset + n].reshape(loc.shape))
                set_constrained(self.scales, name, scale[offset : offset + n].reshape(loc.shape))
                offset += n
        return note

    def _materialise(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.locs = PyroModule()
        self.scales = PyroModule()
        for key, value in state_dict.items():
            group, _, rest = key.partition(".")
            if group not in ("locs", "scales") or not rest.endswith(_SUFFIX):
                raise KeyError(f"{type(self).__name__}: unexpected state dict entry {key!r}")
            name = rest[: -len(_SUFFIX)]
            constraint = constraints.real if group == "locs" else self.scale_constraint
            init = transform_to(constraint)(value.detach().clone())
            deep_setattr(getattr(self, group), name, PyroParam(init, constraint, 0))

    def _setup_materialised(self, *args: Any, **kwargs: Any) -> None:
        AutoGuide._setup_prototype(self, *args, **kwargs)
        self._event_dims = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            unconstrained = biject_to(site["fn"].support).inv(site["value"].detach())
            event_dim = site["fn"].event_dim + unconstrained.dim() - site["value"].dim()
            self._event_dims[name] = event_dim
            for group, constraint in (("locs", constraints.real), ("scales", self.scale_constraint)):
                prefix, _, leaf = name.rpartition(".")
                root = getattr(self, group)
                try:
                    parent = operator.attrgetter(prefix)(root) if prefix else root
                    raw = getattr(parent, leaf + _SUFFIX).detach().clone()
                except AttributeError:
                    raise ValueError(
                        f"{type(self).__name__}: the loaded state dict has no "
                        f"{group[:-1]} for latent site {name!r}"
                    ) from None
                deep_setattr(root, name, PyroParam(transform_to(constraint)(raw), constraint, event_dim))
                # keep the loaded unconstrained values bit for bit (no constrain/unconstrain trip)
                getattr(parent, leaf + _SUFFIX).data.copy_(raw)


class AutoDiagonal(_ParamSpecMixin, AutoDiagonalNormal):
    r"""Diagonal Normal on the packed unconstrained latent vector (``AutoDiagonalNormal`` maths)."""

    _param_constraints: ClassVar = {"loc": None, "scale": constraints.softplus_positive}

    def __init__(
        self, model: Callable, *, init_loc_fn: Callable = init_to_median, init_scale: float = 0.1
    ) -> None:
        super().__init__(model, init_loc_fn=init_loc_fn, init_scale=float(init_scale))
        self._init_contract(
            {
                "init_scale": float(init_scale),
                "init_loc_fn": getattr(init_loc_fn, "__name__", repr(init_loc_fn)),
            }
        )


class AutoFullRank(_ParamSpecMixin, AutoMultivariateNormal):
    r"""Full-covariance Normal :math:`\mathcal N(\mu, \mathrm{diag}(\sigma) L L^\top
    \mathrm{diag}(\sigma))` (``AutoMultivariateNormal`` maths)."""

    _param_constraints: ClassVar = {
        "loc": None,
        "scale": constraints.softplus_positive,
        "scale_tril": constraints.unit_lower_cholesky,
    }

    def __init__(
        self, model: Callable, *, init_loc_fn: Callable = init_to_median, init_scale: float = 0.1
    ) -> None:
        super().__init__(model, init_loc_fn=init_loc_fn, init_scale=float(init_scale))
        self._init_contract(
            {
                "init_scale": float(init_scale),
                "init_loc_fn": getattr(init_loc_fn, "__name__", repr(init_loc_fn)),
            }
        )

    def init_to_laplace(self, *args: Any, **kwargs: Any) -> str:
        r"""Start from the model's Laplace Gaussian :math:`N(\hat z, H^{-1})` where it beats the guide's
        own start (:mod:`pyro_nf.guides.laplace`); returns a note saying which start was kept."""
        start, note = guide_start(self, args, kwargs)
        if start is None:
            return note
        own = (self.loc.detach(), self.scale.detach()[:, None] * self.scale_tril.detach())
        better, note = choose_start(start, (start.loc, start.scale_tril), own)
        if better:
            diag = torch.diagonal(start.scale_tril)
            with torch.no_grad():
                self.loc.copy_(start.loc)
            set_constrained(self, "scale", diag)
            set_constrained(self, "scale_tril", start.scale_tril / diag[:, None])
        return note


class AutoLowRank(_ParamSpecMixin, AutoLowRankMultivariateNormal):
    r"""Low-rank-plus-diagonal Normal (``AutoLowRankMultivariateNormal`` maths); ``rank``
    defaults to :math:`\lceil\sqrt D\rceil`."""

    _param_constraints: ClassVar = {"loc": None, "cov_factor": None, "scale": constraints.softplus_positive}

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        rank: int | None = None,
    ) -> None:
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank must be a positive integer or None, got {rank!r}")
        super().__init__(model, init_loc_fn=init_loc_fn, init_scale=float(init_scale), rank=rank)
        self._init_contract(
            {
                "init_scale": float(init_scale),
                "rank": rank,
                "init_loc_fn": getattr(init_loc_fn, "__name__", repr(init_loc_fn)),
            }
        )
