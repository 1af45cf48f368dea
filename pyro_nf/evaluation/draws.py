r"""Vectorised model/guide traces shared by :mod:`pyro_nf.evaluation.diagnostics` and
:mod:`pyro_nf.evaluation.bridge`.

Both modules need, for :math:`N` draws :math:`z_s \sim q`, the log joint :math:`\log p(x, z_s)`,
the guide density :math:`\log q(z_s)` and (for ArviZ) the draws themselves, pointwise
log-likelihoods and posterior-predictive replicates. This module computes them in batches: the
guide runs under an outer ``pyro.plate`` of size ``batch_size`` at dim
:math:`-(\text{max\_plate\_nesting} + 1)`, the model is replayed on the guide's trace, and each
site's log-density is summed over every dim except the particle dim. Memory is bounded by one
batch.

Sites the model enumerates (``infer={"enumerate": "parallel"}``, absent from the guide) are summed
out exactly as :class:`~pyro.infer.TraceEnum_ELBO` does (tensor message passing over the packed
log-factors), so :math:`\log p(x, z_s)` is then the log joint of the continuous latents with the
discrete ones marginalised; their draws come from :func:`~pyro.infer.infer_discrete`.

This module is private: its layout may change without notice.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import infer_discrete
from pyro.infer.traceenum_elbo import _compute_model_factors
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.util import prune_subsample_sites

from pyro_nf._sites import is_enumerated
from pyro_nf.evaluation.subsample import full_data

PARTICLE_PLATE = "_pyro_nf_particles"


@dataclass(frozen=True)
class SiteLayout:
    """How one site's tensor maps to named ArviZ dims.

    Attributes:
        name: The site name.
        shape: The site's value shape in one unvectorised run of the model.
        event_dim: Number of rightmost event dims in ``shape``.
        keep: Axes of ``shape`` that are kept (singleton batch axes that belong to no plate
            are dropped).
        dims: One dim name per kept axis: the plate's name for plate axes,
            ``"{site}_dim_{k}"`` otherwise.
    """

    name: str
    shape: tuple[int, ...]
    event_dim: int
    keep: tuple[int, ...]
    dims: tuple[str, ...]

    @property
    def kept_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.keep)

    def batch_shape(self) -> tuple[int, ...]:
        return self.shape[: len(self.shape) - self.event_dim]

    @property
    def batch_dims(self) -> tuple[str, ...]:
        """Dim names of the kept batch axes (e.g. of a pointwise log-likelihood)."""
        nb = len(self.shape) - self.event_dim
        return tuple(d for i, d in zip(self.keep, self.dims, strict=True) if i < nb)


@dataclass
class ModelLayout:
    """Static structure of a model/guide pair, read from one unvectorised run."""

    max_plate_nesting: int
    latent: dict[str, SiteLayout] = field(default_factory=dict)
    deterministic: dict[str, SiteLayout] = field(default_factory=dict)
    observed: dict[str, SiteLayout] = field(default_factory=dict)
    observed_values: dict[str, np.ndarray] = field(default_factory=dict)
    enumerated: tuple[str, ...] = ()
    plates: dict[str, int] = field(default_factory=dict)
    #: plates the model subsamples, evaluated on their full data: name -> (size, subsample_size)
    subsampled: dict[str, tuple[int, int]] = field(default_factory=dict)

    def coords(self) -> dict[str, np.ndarray]:
        """Coordinates of every named dim: plates and unnamed site axes, each ``arange(size)``."""
        coords = {name: np.arange(size) for name, size in self.plates.items()}
        for group in (self.latent, self.deterministic, self.observed):
            for lay in group.values():
                for dim, size in zip(lay.dims, lay.kept_shape, strict=True):
                    coords.setdefault(dim, np.arange(size))
        return coords

    def dims(self) -> dict[str, list[str]]:
        """Dim names per variable, for ArviZ's ``dims=`` argument."""
        out: dict[str, list[str]] = {}
        for group in (self.latent, self.deterministic, self.observed):
            out.update({name: list(lay.dims) for name, lay in group.items()})
        return out


@dataclass
class Batch:
    """Results for one batch of ``n`` guide draws (numpy arrays, draw axis first)."""

    log_p: np.ndarray
    log_q: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = field(default_factory=dict)
    predictive: dict[str, np.ndarray] = field(default_factory=dict)
    #: the first draw's latent values in their unvectorised shapes (not concatenated)
    first: dict[str, torch.Tensor] = field(default_factory=dict)


def guide_name(guide: Callable) -> str:
    """The registry name of ``guide``, else its class name."""
    return str(getattr(guide, "registry_name", "") or type(guide).__name__)


def guide_config_json(guide: Callable) -> str:
    """The guide's constructor settings (``guide.config``) as a sorted JSON string."""
    return json.dumps(getattr(guide, "config", {}) or {}, sort_keys=True, default=str)


def _is_deterministic(site: dict) -> bool:
    return bool(site["infer"].get("_deterministic", False))


def _site_layout(name: str, site: dict) -> SiteLayout:
    value = site["value"]
    shape = tuple(value.shape)
    event_dim = int(site["fn"].event_dim)
    batch_ndim = len(shape) - event_dim
    frames = {f.dim: f for f in site["cond_indep_stack"] if f.vectorized}
    keep: list[int] = []
    dims: list[str] = []
    k = 0
    for i, size in enumerate(shape):
        frame = frames.get(i - batch_ndim) if i < batch_ndim else None
        if frame is not None:
            keep.append(i)
            dims.append(frame.name)
        elif i < batch_ndim and size == 1:
            continue
        else:
            keep.append(i)
            dims.append(f"{name}_dim_{k}")
            k += 1
    return SiteLayout(name, shape, event_dim, tuple(keep), tuple(dims))


@torch.no_grad()
def inspect_model(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> ModelLayout:
    """Run ``guide`` once (which also sets it up) and replay ``model`` on it to read its structure.

    Raises:
        ValueError: If the model has a latent site that the guide neither samples nor is
            marked for parallel enumeration (its draws would silently come from the prior).
    """
    with poutine.block(), full_data() as expanded, pyro.validation_enabled(False):
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
        model_trace = prune_subsample_sites(
            poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        )
    nesting = 0
    for trace in (model_trace, guide_trace):
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            nesting = max(nesting, len(site["fn"].batch_shape))
            for f in site["cond_indep_stack"]:
                if f.vectorized:
                    nesting = max(nesting, -f.dim)
    layout = ModelLayout(max_plate_nesting=nesting, subsampled=dict(expanded))
    enumerated = []
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("is_auxiliary"):
            continue
        for f in site["cond_indep_stack"]:
            if f.vectorized:
                layout.plates.setdefault(f.name, f.size)
        lay = _site_layout(name, site)
        if _is_deterministic(site):
            layout.deterministic[name] = lay
        elif site["is_observed"]:
            layout.observed[name] = lay
            layout.observed_values[name] = site["value"].detach().cpu().numpy().reshape(lay.kept_shape)
        else:
            if name not in guide_trace.nodes:
                if not is_enumerated(site):
                    raise ValueError(
                        f"The model's latent site {name!r} is neither in the guide nor marked for "
                        "enumeration, so its values would come from the prior and log p would "
                        "be wrong. Decorate the model with pyro.infer.config_enumerate (and hide "
                        "the site from the guide), or let the guide sample it."
                    )
                enumerated.append(name)
            layout.latent[name] = lay
    layout.enumerated = tuple(enumerated)
    return layout


def _vectorize(fn: Callable, n: int, dim: int) -> Callable:
    def vectorized(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(PARTICLE_PLATE, n, dim=dim):
            return fn(*args, **kwargs)

    return vectorized


def _per_particle(term: torch.Tensor, symbol: str | None, n: int) -> torch.Tensor:
    """Sum a packed tensor over every dim but the particle dim; shape ``(n,)``."""
    dims = term._pyro_dims
    if symbol is None or symbol not in dims:
        return term.sum().expand(n)
    return term.movedim(dims.index(symbol), 0).reshape(term.shape[dims.index(symbol)], -1).sum(-1)


def _unbatch(t: torch.Tensor, n: int, lay: SiteLayout, nesting: int, event: bool) -> np.ndarray:
    """Map a vectorised site tensor to ``(n, *kept_shape)`` (``event=False``: batch axes only)."""
    batch = lay.batch_shape()
    tail = lay.shape[len(batch) :] if event else ()
    target = (n,) + (1,) * (nesting - len(batch)) + batch + tail
    if t.dim() > len(target):
        raise ValueError(
            f"Site {lay.name!r} has shape {tuple(t.shape)} under {n} vectorised particles, which "
            f"does not broadcast to {target}: the model must be vectorisable over an outer plate "
            "(as Pyro's vectorised ELBOs require)."
        )
    t = t.reshape((1,) * (len(target) - t.dim()) + tuple(t.shape)).expand(target)
    shape = lay.shape if event else batch
    keep = [i for i in lay.keep if i < len(shape)]
    return t.reshape((n,) + shape).reshape((n,) + tuple(shape[i] for i in keep)).cpu().numpy()


def _enumerated_log_likelihood(
    model_trace: Any, name: str, sum_dims: set, enum_sites: list, ordering: dict
) -> torch.Tensor:
    r"""Pointwise log-likelihood of observed site ``name`` with enumerated parents summed out.

    Exact when each enumerated site feeds one observed site in the same plates (mixtures, local
    discrete latents): :math:`\log \sum_z p(z \mid \theta)\, p(y_i \mid z, \theta)`.
    """
    term = model_trace.nodes[name]["packed"]["unscaled_log_prob"]
    own = set(term._pyro_dims) & sum_dims
    if not own:
        return packed.unpack(term, model_trace.symbol_to_dim)
    tree: OrderedDict = OrderedDict()
    tree.setdefault(ordering[name], []).append(term)
    for site in enum_sites:
        lp = site["packed"]["unscaled_log_prob"]
        if own & set(lp._pyro_dims):
            tree.setdefault(ordering[site["name"]], []).append(lp)
    dims = set().union(*(set(t._pyro_dims) for ts in tree.values() for t in ts)) & sum_dims
    out = contract_to_tensor(tree, dims, target_ordinal=ordering[name])
    return packed.unpack(out, model_trace.symbol_to_dim)


@torch.no_grad()
def draw_batch(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    layout: ModelLayout,
    n: int,
    *,
    full: bool,
    vectorized: bool = True,
) -> Batch:
    r"""Draw ``n`` particles from ``guide``; score them under ``model``.

    Subsampled plates use their full data (:func:`~pyro_nf.evaluation.subsample.full_data`), and
    distribution arguments are not validated: a draw the model cannot score (e.g. a scale that
    underflowed to 0) gets a non-finite log density instead of raising.

    Args:
        full: If False, compute only ``log_p`` and ``log_q``; if True, also constrained values of
            every latent and deterministic site, pointwise log-likelihoods and one
            posterior-predictive replicate per draw.
        vectorized: If False, run model and guide once, unvectorised (``n`` must be 1).
    """
    with full_data(), pyro.validation_enabled(False):
        return _draw_batch(model, guide, args, kwargs, layout, n, full, vectorized)


def _draw_batch(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    layout: ModelLayout,
    n: int,
    full: bool,
    vectorized: bool,
) -> Batch:
    nesting = layout.max_plate_nesting
    dim = -(nesting + 1)
    if not vectorized and n != 1:
        raise ValueError(f"an unvectorised batch holds one draw, got n={n}")
    vectorize = _vectorize if vectorized else (lambda fn, n, dim: fn)
    vmodel = vectorize(model, n, dim)
    with poutine.block():
        guide_trace = prune_subsample_sites(
            poutine.trace(vectorize(guide, n, dim)).get_trace(*args, **kwargs)
        )
        scored = vmodel
        if layout.enumerated:
            scored = poutine.enum(vmodel, first_available_dim=dim - 1)
        model_trace = prune_subsample_sites(
            poutine.trace(poutine.replay(scored, trace=guide_trace)).get_trace(*args, **kwargs)
        )
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    guide_trace.pack_tensors()
    model_trace.pack_tensors(guide_trace.plate_to_symbol)
    symbol = guide_trace.plate_to_symbol.get(PARTICLE_PLATE)

    marginal, factors, ordering, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
    log_p = torch.zeros(n)
    for terms in marginal.values():
        for term in terms:
            log_p = log_p + _per_particle(term, symbol, n)
    if factors:
        target = frozenset({symbol}) if symbol is not None else frozenset()
        joint = contract_to_tensor(factors, sum_dims, target_ordinal=target)
        log_p = log_p + _per_particle(packed.scale_and_mask(joint, scale=scale), symbol, n)
    log_q = torch.zeros(n)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            log_q = log_q + _per_particle(site["packed"]["log_prob"], symbol, n)
    batch = Batch(log_p.double().cpu().numpy(), log_q.double().cpu().numpy())
    for name, lay in layout.latent.items():  # particle 0's latent values (the vectorisation check)
        if name not in layout.enumerated:
            first = _unbatch(model_trace.nodes[name]["value"], n, lay, nesting, True)[0]
            batch.first[name] = torch.as_tensor(first).reshape(lay.shape)
    if not full:
        return batch

    if layout.enumerated:
        with poutine.block():
            value_trace = poutine.trace(
                infer_discrete(
                    poutine.replay(vmodel, trace=guide_trace), first_available_dim=dim - 1, temperature=1
                )
            ).get_trace(*args, **kwargs)
        enum_sites = [model_trace.nodes[name] for name in layout.enumerated]
    else:
        value_trace, enum_sites = model_trace, []
    for group in (layout.latent, layout.deterministic):
        for name, lay in group.items():
            batch.values[name] = _unbatch(value_trace.nodes[name]["value"], n, lay, nesting, True)
    for name, lay in layout.observed.items():
        lik = _enumerated_log_likelihood(model_trace, name, sum_dims, enum_sites, ordering)
        batch.log_likelihood[name] = _unbatch(lik, n, lay, nesting, False)
    with poutine.block():
        pred_trace = poutine.trace(poutine.uncondition(poutine.replay(vmodel, trace=value_trace))).get_trace(
            *args, **kwargs
        )
    for name, lay in layout.observed.items():
        batch.predictive[name] = _unbatch(pred_trace.nodes[name]["value"], n, lay, nesting, True)
    return batch


def concat(batches: list[Batch]) -> Batch:
    """Concatenate batches along the draw axis."""

    def cat(key: str) -> dict[str, np.ndarray]:
        return {k: np.concatenate([getattr(b, key)[k] for b in batches]) for k in getattr(batches[0], key)}

    return Batch(
        np.concatenate([b.log_p for b in batches]),
        np.concatenate([b.log_q for b in batches]),
        cat("values"),
        cat("log_likelihood"),
        cat("predictive"),
    )
