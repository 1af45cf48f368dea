r"""Normalizing-flow autoguides: :class:`AutoPlanar`, :class:`AutoIAF`, :class:`AutoMAF`.

Each is a real :class:`pyro.infer.autoguide.AutoContinuous`: the model's latent sites are mapped to
one unconstrained vector :math:`z \in \mathbb{R}^D` (Pyro's constraint bijections), and

.. math:: z = f_K \circ \dots \circ f_1(\varepsilon), \qquad
          \varepsilon \sim \mathcal{N}(\mathrm{loc}, \mathrm{diag}(\mathrm{scale}^2)),

.. math:: \log q(z) = \log \mathcal{N}(\varepsilon) - \sum_k \log|\det J_{f_k}|.

``loc`` starts at the model's ``init_loc_fn`` point and ``scale`` at ``init_scale``; every layer
starts as exactly the identity, so the untrained flow guide *is* ``AutoDiagonalNormal`` with the
same initialisation (same draws under the same seed, same log q) and training can only improve on
it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pyro
import torch
from pyro.distributions import Normal, TorchDistribution, TransformedDistribution, constraints
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from torch import nn
from torch.distributions import AffineTransform, ComposeTransform, biject_to

from pyro_nf._util import check_positive_float, check_positive_int, isolated_rng
from pyro_nf.guides.contract import _ContinuousMixin
from pyro_nf.guides.laplace import choose_start, guide_start, set_constrained
from pyro_nf.guides.stl import StickingTheLanding, detached_flow
from pyro_nf.transforms import FixedAffine, make_transform
from pyro_nf.transforms.registry import TRANSFORMS

_QUANTILE_DRAWS = 4000


LayerSpec = str | Callable[..., nn.Module]


class AutoFlow(_ContinuousMixin, AutoContinuous):
    r"""A learnable diagonal Normal pushed through a stack of registered flow layers.

    The layers come from the transform registry (:func:`pyro_nf.register_transform`): ``layers`` is
    a registered name or a factory ``factory(input_dim, **cfg) -> FlowTransform`` repeated
    ``num_flows`` times, or a sequence of them (one per layer, or one block repeated ``num_flows``
    times). ``layer_kwargs`` is a dict of options for every layer, or a function
    ``(k, input_dim) -> dict`` giving layer ``k``'s options (e.g. alternating variable orders). A layer
    registered by a third party is thereby usable in a guide, in :func:`pyro_nf.compare` and on the
    command line (through :func:`pyro_nf.register_guide`). See the module docstring for the maths.

    Args:
        model: a Pyro model.
        layers: layer name(s) or factory(ies), see above.
        num_flows: how often ``layers`` is repeated (default 1 for a sequence, 4 for one layer).
        layer_kwargs: options for the layer factories.
        init_loc_fn: per-site initialisation of the base ``loc`` (default ``init_to_median``).
        init_scale: initial base scale (default 0.1, as ``AutoNormal``).
        stl: train with the sticking-the-landing gradient (:mod:`pyro_nf.guides.stl`).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0., 1.).expand([3]).to_event(1))
        >>> guide = AutoFlow(model, layers=["planar", "iaf"], num_flows=2,
        ...                  layer_kwargs=lambda k, d: {"hidden_dims": (8,)} if k % 2 else {})
        >>> guide()["x"].shape, [type(f).__name__ for f in guide.flows]
        (torch.Size([3]), ['Planar', 'AffineAutoregressive', 'Planar', 'AffineAutoregressive'])
    """

    #: default repetitions of a single layer spec
    default_num_flows: ClassVar[int] = 4

    def __init__(
        self,
        model: Callable,
        *,
        layers: LayerSpec | Sequence[LayerSpec],
        num_flows: int | None = None,
        layer_kwargs: dict[str, Any] | Callable[[int, int], dict[str, Any]] | None = None,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        stl: bool = False,
        **config: Any,
    ) -> None:
        block = [layers] if isinstance(layers, str) or callable(layers) else list(layers)
        if not block:
            raise ValueError("layers must name at least one flow layer")
        for spec in block:
            if isinstance(spec, str):
                TRANSFORMS.get(spec)  # unknown names fail here, listing the known ones
            elif not callable(spec):
                raise ValueError(f"layers entries must be registered names or factories, got {spec!r}")
        if num_flows is None:
            num_flows = self.default_num_flows if len(block) == 1 else 1
        self.num_flows = check_positive_int("num_flows", num_flows)
        self.layer_specs = block * self.num_flows
        if layer_kwargs is not None and not (isinstance(layer_kwargs, dict) or callable(layer_kwargs)):
            raise ValueError(
                f"layer_kwargs must be a dict or a function (k, input_dim) -> dict, got {layer_kwargs!r}"
            )
        self.layer_kwargs = layer_kwargs
        self._init_scale = check_positive_float("init_scale", init_scale)
        self.stl = bool(stl)
        super().__init__(model, init_loc_fn=init_loc_fn)
        names = [s if isinstance(s, str) else getattr(s, "__name__", repr(s)) for s in block]
        self._init_contract(
            {
                "layers": names,
                "num_flows": self.num_flows,
                "init_scale": self._init_scale,
                "init_loc_fn": getattr(init_loc_fn, "__name__", repr(init_loc_fn)),
                "stl": self.stl,
                **config,
            }
        )

    # -- construction -------------------------------------------------------------------------
    def _layer_config(self, k: int, latent_dim: int) -> dict[str, Any]:
        """Options of layer ``k`` (override in subclasses; default: ``layer_kwargs``)."""
        if self.layer_kwargs is None:
            return {}
        if callable(self.layer_kwargs):
            return dict(self.layer_kwargs(k, latent_dim))
        return dict(self.layer_kwargs)

    def _make_flows(self, latent_dim: int) -> list[nn.Module]:
        flows = []
        for k, spec in enumerate(self.layer_specs):
            cfg = self._layer_config(k, latent_dim)
            flows.append(
                make_transform(spec, latent_dim, **cfg) if isinstance(spec, str) else spec(latent_dim, **cfg)
            )
        return flows

    def _create_params(self, loc: torch.Tensor) -> None:
        self.loc = nn.Parameter(loc)
        self.scale = PyroParam(loc.new_full(loc.shape, self._init_scale), constraints.softplus_positive)
        flows = nn.ModuleList(self._make_flows(loc.shape[-1]))
        self.flows = flows.to(dtype=loc.dtype, device=loc.device)

    def _setup_fresh_traced(self, *args: Any, **kwargs: Any) -> None:
        AutoContinuous._setup_prototype(self, *args, **kwargs)
        self._fresh_loc = self._init_loc()

    def _setup_fresh_params(self) -> None:
        self._create_params(self._fresh_loc)
        del self._fresh_loc

    def _materialise(self, state_dict: dict[str, torch.Tensor]) -> None:
        if "loc" not in state_dict:
            raise KeyError(
                f"{type(self).__name__}: state dict has no 'loc' entry; keys: {sorted(state_dict)[:8]}"
            )
        self._create_params(torch.zeros_like(state_dict["loc"]))
        if "whiten.loc" in state_dict:  # a guide started from its Laplace Gaussian
            self.whiten = FixedAffine(state_dict["whiten.loc"], state_dict["whiten.scale_tril"])

    # -- the posterior ------------------------------------------------------------------------
    def get_base_dist(self) -> Normal:
        r"""A standard Normal on :math:`\mathbb{R}^D`, Pyro's convention for flow guides (what
        ``NeuTraReparam`` hands to NUTS as the warped space): ``get_posterior()`` is this base pushed
        through :meth:`get_transform`."""
        zero = torch.zeros_like(self.loc)
        return Normal(zero, torch.ones_like(zero)).to_event(1)

    def init_to_laplace(self, *args: Any, **kwargs: Any) -> str:
        r"""Start from the model's Laplace Gaussian :math:`N(\hat z, H^{-1})` where it beats the
        guide's own start (:mod:`pyro_nf.guides.laplace`): the base becomes :math:`N(0, I)` and a
        fixed :class:`~pyro_nf.transforms.FixedAffine` ``(z_hat, chol(H^{-1}))`` follows the layers
        (``self.whiten``), so the layers, still the identity, learn in whitened coordinates. Returns
        a note saying which start was kept and why. Called by :func:`pyro_nf.fit` (``init=``)."""
        start, note = guide_start(self, args, kwargs)
        if start is None:
            return note
        own = (self.loc.detach(), torch.diag(self.scale.detach()))
        better, note = choose_start(start, (start.loc, start.scale_tril), own)
        if better:
            with torch.no_grad():
                self.loc.zero_()
            set_constrained(self, "scale", torch.ones_like(self.loc))
            self.whiten = FixedAffine(start.loc.to(self.loc), start.scale_tril.to(self.loc))
        return note

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As the contract's, creating the whitening map first when the state dict has one."""
        has_layers, whiten = getattr(self, "flows", None) is not None, getattr(self, "whiten", None)
        if "whiten.loc" in state_dict and has_layers and whiten is None:
            self.whiten = FixedAffine(state_dict["whiten.loc"], state_dict["whiten.scale_tril"])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _layers(self) -> list[nn.Module]:
        """The flow layers, then the fixed whitening map if there is one."""
        whiten = getattr(self, "whiten", None)
        return [*self.flows] + ([whiten] if whiten is not None else [])

    def get_transform(self, *args: Any, **kwargs: Any) -> ComposeTransform:
        """The whole map from the standard-Normal base to the unconstrained latent: the affine
        ``loc + scale * eps`` followed by the flow layers (so ``NeuTraReparam`` with this guide gives
        NUTS a space in which the fitted posterior is standard Normal)."""
        return ComposeTransform([AffineTransform(self.loc, self.scale, event_dim=1), *self._layers()])

    def get_posterior(self, *args: Any, **kwargs: Any) -> TransformedDistribution:
        """The guide's distribution over the unconstrained latent vector: the learnable diagonal
        Normal ``N(loc, scale^2)`` pushed through the flow layers (the same distribution as
        ``get_base_dist()`` pushed through ``get_transform()``)."""
        return TransformedDistribution(Normal(self.loc, self.scale).to_event(1), self._layers())

    def latent_distribution(self, *args: Any, **kwargs: Any) -> TorchDistribution:
        """What :meth:`sample_latent` draws from: :meth:`get_posterior`, or with ``stl=True`` the
        same draws scored with detached parameters (only the path gradient: :mod:`pyro_nf.guides.stl`)."""
        posterior = self.get_posterior(*args, **kwargs)
        if self.stl:
            base = Normal(self.loc.detach(), self.scale.detach()).to_event(1)
            posterior = StickingTheLanding(posterior, detached_flow(base, self._layers()))
        return posterior

    @property
    def supports_stl(self) -> bool:
        """Whether :attr:`stl` can be switched on: every layer has an inverse (``fit(stl_after=)``)."""
        return getattr(self, "flows", None) is not None and all(
            getattr(f, "has_inverse", False) for f in self._layers()
        )

    def sample_latent(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Sample the packed unconstrained latent from :meth:`latent_distribution`."""
        return pyro.sample(
            f"_{self._pyro_name}_latent",
            self.latent_distribution(*args, **kwargs),
            infer={"is_auxiliary": True},
        )

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Posterior quantiles of each latent site, from 4000 guide draws (a fixed internal seed,
        so repeated calls agree and the global random stream is untouched).

        Quantiles are taken per coordinate in unconstrained space and mapped through the site's
        bijection (as ``AutoContinuous`` does with its Normal quantiles)."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        with isolated_rng():
            torch.manual_seed(0)
            z = self.get_posterior().sample((_QUANTILE_DRAWS,))
        q = torch.as_tensor(quantiles, dtype=z.dtype, device=z.device)
        latents = torch.quantile(z, q, dim=0)
        result: dict[str, list[torch.Tensor]] = {}
        for latent in latents:
            for site, value in self._unpack_latent(latent):
                result.setdefault(site["name"], []).append(biject_to(site["fn"].support)(value))
        return {k: torch.stack(v) for k, v in result.items()}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Posterior median of each latent site (sample based, see :meth:`quantiles`)."""
        return {k: v[0] for k, v in self.quantiles([0.5], *args, **kwargs).items()}


class AutoPlanar(AutoFlow):
    r"""Diagonal Normal pushed through ``num_flows`` planar layers (Rezende & Mohamed 2015).

    Cheap (:math:`O(D)` per layer) but each layer bends the density along one direction only, so
    many layers are needed; no inverse, so log q only of its own draws (``has_log_prob = False``).

    Defaults: ``num_flows=16`` (planar layers are weak individually; 16 cost about as much as one
    small MADE).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0., 1.))
        >>> guide = AutoPlanar(model, num_flows=4)
        >>> sorted(guide())
        ['x']
    """

    has_log_prob: ClassVar[bool] = False

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 16,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__(
            model, layers="planar", num_flows=num_flows, init_loc_fn=init_loc_fn, init_scale=init_scale
        )


class _AutoAutoregressive(AutoFlow):
    direction: ClassVar[str] = ""
    default_stl: ClassVar[bool] = False

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] | None = None,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        max_log_scale: float = 5.0,
        skip_connections: bool = True,
        stl: bool | None = None,
    ) -> None:
        if hidden_dims is not None:
            if not isinstance(hidden_dims, Sequence) or isinstance(hidden_dims, str):
                raise ValueError(f"hidden_dims must be a sequence of positive integers, got {hidden_dims!r}")
            hidden_dims = tuple(hidden_dims)
            if not hidden_dims:
                raise ValueError("hidden_dims must be a non-empty sequence of positive integers")
            for h in hidden_dims:
                check_positive_int("every entry of hidden_dims", h)
        self.hidden_dims = hidden_dims
        self.max_log_scale = check_positive_float("max_log_scale", max_log_scale)
        self.skip_connections = bool(skip_connections)
        super().__init__(
            model,
            layers=self.direction,
            num_flows=num_flows,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            stl=self.default_stl if stl is None else bool(stl),
            hidden_dims=hidden_dims,
            max_log_scale=self.max_log_scale,
            skip_connections=self.skip_connections,
        )

    #: the default hidden width never exceeds this (at D = 5000, max(2 D, 32) would give one layer
    #: ~10^9 weights); MADE allows widths below D (coarser degree groups, still autoregressive)
    max_default_width: ClassVar[int] = 512

    @classmethod
    def default_hidden_dims(cls, latent_dim: int) -> tuple[int, int]:
        """Two hidden layers of width ``min(max(2 D, 32), 512)``."""
        width = min(max(2 * latent_dim, 32), cls.max_default_width)
        return (width, width)

    def _layer_config(self, k: int, latent_dim: int) -> dict[str, Any]:
        return {
            "hidden_dims": self.hidden_dims or self.default_hidden_dims(latent_dim),
            "order": "natural" if k % 2 == 0 else "reversed",
            "max_log_scale": self.max_log_scale,
            "skip_connections": self.skip_connections,
        }


class AutoIAF(_AutoAutoregressive):
    r"""Inverse autoregressive flow guide (Kingma et al. 2016): MADE-conditioned affine layers
    applied in the sampling direction.

    ======================== ===========================
    sample + log q of it     one pass per layer (cached)
    log q of arbitrary z     :math:`D` sequential passes
    ======================== ===========================

    Defaults: ``num_flows=4`` layers alternating natural and reversed variable order (the
    permutation between layers), ``hidden_dims=(min(max(2D, 32), 512),) * 2``, ``max_log_scale=5`` (each
    layer scales a coordinate by at most :math:`e^{\pm 5}`; no overflow for any input) and
    ``skip_connections=True`` (MADE's direct input-output connections, fused into the output
    layer: they let a scale depend linearly on earlier coordinates, as a funnel's does, and they
    lowered the funnel's KL in our runs; ``False`` gives Pyro's ``AutoIAFNormal`` architecture).
    ``stl=True`` switches to the sticking-the-landing gradient (:mod:`pyro_nf.guides.stl`): lower
    variance near the optimum, at the cost of scoring each draw through the inverse (one pass per
    MAF layer, :math:`D` sequential passes per IAF layer).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0., 1.).expand([3]).to_event(1))
        >>> guide = AutoIAF(model, num_flows=2, hidden_dims=(16,))
        >>> guide()["x"].shape
        torch.Size([3])
    """

    direction: ClassVar[str] = "iaf"


class AutoMAF(_AutoAutoregressive):
    r"""Masked autoregressive flow guide (Papamakarios et al. 2017): the same layer as
    :class:`AutoIAF` used in the density direction.

    ======================== ===========================================
    log q of arbitrary z     one pass per layer (e.g. score NUTS draws)
    sample                   :math:`D` sequential passes (vectorised over the batch)
    ======================== ===========================================

    Defaults as :class:`AutoIAF`, except ``stl=True``: the sticking-the-landing gradient costs MAF
    only one extra pass per layer (its density direction) and, trained by reverse KL, MAF needed
    it: on centered eight schools (1500 steps, 8 particles) the tau sd went from 33% to 19% off the
    reference, on the funnel (1500 steps, 16 particles) the log-scale sd from 44% to 26% off.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0., 1.).expand([3]).to_event(1))
        >>> guide = AutoMAF(model, num_flows=2, hidden_dims=(16,))
        >>> guide.log_prob_unconstrained(torch.zeros(3)).shape
        torch.Size([])
    """

    direction: ClassVar[str] = "maf"
    default_stl: ClassVar[bool] = True
