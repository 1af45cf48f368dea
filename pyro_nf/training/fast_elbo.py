r"""The fast ELBO: the ``Trace_ELBO`` estimator without per-step tracing of the guide.

For a model with *static* latent structure (the same latent sites, with the same shapes, on every
run) the guide's distribution over the unconstrained latent vector and the constraint bijections
are fixed at set-up, so each step needs only

.. math:: \widehat{\mathrm{ELBO}} = \frac1K \sum_{k=1}^K \Big[\log p\big(x, T(z_k)\big)
          + \log\big|\det J_T(z_k)\big| - \log q(z_k)\Big], \qquad z_k \sim q,

with :math:`T` the per-site ``biject_to(site.support)`` maps of Pyro's ``AutoContinuous`` (the
recipe of ADVI and of Pyro's NUTS potential energy). The :math:`K` draws are one batched
``rsample((K,))`` of the guide's posterior (for a flow: one pass per IAF layer, log q from the
layers' cached log-dets) and the model is run *once* under an outermost
``pyro.plate("num_particles_vectorized", K)`` with the latent sites conditioned on the draws, as
``Trace_ELBO(vectorize_particles=True)`` does; subsampled plates scale their likelihood by
``N / batch`` (Pyro's plate ``scale``) and draw fresh indices each step. Draws consume the random
stream exactly as ``Trace_ELBO`` does, so equal parameters and seed give an equal loss and, to
float tolerance, equal gradients.

The guide is run through its own public pieces only: ``get_posterior()`` (or
``latent_distribution()`` where a guide has one, e.g. the sticking-the-landing flows),
``_unpack_latent`` and ``prototype_trace`` for ``AutoContinuous`` guides, and the per-site
``locs``/``scales`` of ``AutoNormal``. :func:`plan` decides whether the fast path applies and says
why not (enumeration, latent sites local to subsampled plates, dynamic structure, an unsupported
guide, a user-chosen loss, unvectorised particles).

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro_nf.guides import AutoIAF
    >>> def model():
    ...     s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    ...     x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    ...     pyro.sample("y", dist.Normal(x.sum(-1), s), obs=torch.tensor(1.0))
    >>> guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
    >>> _ = guide()  # set-up (fit() does this)
    >>> fast, reason = plan(model, guide, (), {}, num_particles=4)
    >>> reason
    ''
    >>> fast.differentiable_loss().shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import TransformedDistribution
from pyro.distributions.util import scale_and_mask, sum_rightmost
from pyro.infer.autoguide import AutoContinuous, AutoNormal
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, Transform, biject_to
from torch.distributions.transforms import IndependentTransform, identity_transform

from pyro_nf._util import isolated_rng

__all__ = ["FastELBO", "plan"]

_PARTICLE_PLATE = "num_particles_vectorized"  # the name Trace_ELBO uses


class _ConditionAndScore(Messenger):
    """Condition the latent sites on ``values`` and add up every sample site's scaled, masked
    log density (what ``poutine.trace`` + ``Trace.log_prob_sum`` compute, without the trace)."""

    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = values
        self.log_joint: torch.Tensor | float = 0.0

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["is_observed"] = True

    def _postprocess_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or site_is_subsample(msg):
            return
        try:
            log_p = msg["fn"].log_prob(msg["value"], *msg["args"], **msg["kwargs"])
        except ValueError as err:
            raise ValueError(f"Error while computing log_prob at site '{msg['name']}': {err}") from err
        self.log_joint = self.log_joint + scale_and_mask(log_p, msg["scale"], msg["mask"]).sum()


def _is_identity(t: Transform) -> bool:
    while isinstance(t, IndependentTransform):
        t = t.base_transform
    return t == identity_transform


def _structure(trace: poutine.Trace) -> list[tuple]:
    """What must not change between runs: sample sites, their observedness, shapes and plates."""
    return [
        (
            name,
            bool(site["is_observed"]),
            tuple(site["value"].shape),
            tuple((f.name, f.size, f.dim) for f in site["cond_indep_stack"]),
        )
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def _max_plate_nesting(trace: poutine.Trace) -> int:
    dims = [
        -f.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for f in site["cond_indep_stack"]
        if f.vectorized and f.dim is not None
    ]
    return max(dims, default=0)


def _is_flow(posterior: Distribution) -> bool:
    """A ``TransformedDistribution`` whose layers compute their own log-dets in the forward pass."""
    return type(posterior) in (TransformedDistribution, torch.distributions.TransformedDistribution) and all(
        callable(getattr(t, "forward_and_log_det", None)) for t in posterior.transforms
    )


def _flow_rsample_log_prob(
    posterior: TransformedDistribution, shape: torch.Size
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``rsample`` and ``log_prob`` of a flow's own draw in one pass per layer:
    :math:`\log q(z) = \log p_0(x_0) - \sum_k \log|\det J_k(x_{k-1})|` (the values
    ``TransformedDistribution`` computes through its caches, without their bookkeeping)."""
    x = posterior.base_dist.rsample(shape)
    log_q = posterior.base_dist.log_prob(x)
    for layer in posterior.transforms:
        x, ladj = layer.forward_and_log_det(x)
        log_q = log_q - ladj
    return x, log_q


class _PackedDraws:
    """Draws of an ``AutoContinuous`` guide: one packed vector, unpacked per site."""

    def __init__(self, guide: AutoContinuous, nesting: int) -> None:
        self.guide, self.nesting = guide, nesting
        self.transforms = {
            name: biject_to(site["fn"].support)
            for name, site in guide.prototype_trace.iter_stochastic_nodes()
        }

    def distribution(self) -> Distribution:
        pick = getattr(self.guide, "latent_distribution", None)
        return pick() if callable(pick) else self.guide.get_posterior()

    def __call__(self, k: int | None) -> tuple[Iterator, torch.Tensor]:
        posterior = self.distribution()
        shape = torch.Size() if k is None else torch.Size((k,))
        if _is_flow(posterior):
            z, log_q = _flow_rsample_log_prob(posterior, shape)
        else:
            z = posterior.rsample(shape)
            log_q = posterior.log_prob(z)
        if k is not None:
            z = z.reshape((k,) + (1,) * self.nesting + z.shape[-1:])
        sites = ((site, u) for site, u in self.guide._unpack_latent(z))
        return sites, log_q.sum()


class _MeanFieldDraws:
    """Draws of ``AutoNormal``: an independent Normal per site, drawn in prototype order."""

    def __init__(self, guide: AutoNormal, nesting: int) -> None:
        self.guide, self.nesting = guide, nesting
        self.transforms = {
            name: biject_to(site["fn"].support)
            for name, site in guide.prototype_trace.iter_stochastic_nodes()
        }

    def __call__(self, k: int | None) -> tuple[Iterator, torch.Tensor]:
        log_q: torch.Tensor | float = 0.0
        out = []
        for name, site in self.guide.prototype_trace.iter_stochastic_nodes():
            loc, scale = self.guide._get_loc_and_scale(name)
            shape = loc.shape
            if k is not None:
                event_dim = self.guide._event_dims[name]
                shape = torch.broadcast_shapes(shape, (k,) + (1,) * (self.nesting + event_dim))
            base = torch.distributions.Normal(loc.expand(shape), scale.expand(shape), validate_args=False)
            u = base.rsample()
            log_q = log_q + base.log_prob(u).sum()
            out.append((site, u))
        return iter(out), log_q


class FastELBO:
    r"""The ``Trace_ELBO`` estimate computed from the guide's posterior and the conditioned model
    (see the module docstring for the formula and when it applies; build it with :func:`plan`).

    Args:
        model: the Pyro model.
        guide: an ``AutoContinuous`` guide or ``AutoNormal``, already set up (called once).
        args, kwargs: the model's arguments.
        num_particles: :math:`K`, drawn in one vectorised pass.
        max_plate_nesting: the model's plate nesting (the particle plate goes one dim left of it).
    """

    def __init__(
        self,
        model: Callable,
        guide: Any,
        args: tuple,
        kwargs: dict,
        *,
        num_particles: int = 1,
        max_plate_nesting: int = 0,
    ) -> None:
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        draws_cls = _MeanFieldDraws if isinstance(guide, AutoNormal) else _PackedDraws
        self._draws = draws_cls(guide, max_plate_nesting)
        #: per site: the constraint bijection, or None where it is the identity (no log-det)
        self._transforms: dict[str, Transform | None] = {
            name: None if _is_identity(t) else t for name, t in self._draws.transforms.items()
        }

    def elbo_sum(self) -> torch.Tensor:
        r""":math:`\sum_k [\log p(x, T(z_k)) + \log|J_T(z_k)| - \log q(z_k)]` (differentiable)."""
        k = self.num_particles if self.num_particles > 1 else None
        sites, log_q = self._draws(k)
        values: dict[str, torch.Tensor] = {}
        log_det: torch.Tensor | float = 0.0
        for site, u in sites:
            transform = self._transforms[site["name"]]
            if transform is None:
                values[site["name"]] = u
                continue
            value = transform(u)
            ladj = transform.log_abs_det_jacobian(u, value)
            log_det = log_det + sum_rightmost(ladj, ladj.dim() - value.dim() + site["fn"].event_dim).sum()
            values[site["name"]] = value
        score = _ConditionAndScore(values)
        if k is None:
            with score:
                self.model(*self.args, **self.kwargs)
        else:
            with pyro.plate(_PARTICLE_PLATE, k, dim=-self.max_plate_nesting - 1), score:
                self.model(*self.args, **self.kwargs)
        return score.log_joint + log_det - log_q

    def differentiable_loss(self) -> torch.Tensor:
        """Minus the ELBO estimate (mean over the particles), differentiable in the parameters.

        Runs with Pyro's and torch's argument validation off: :func:`plan` ran the model with it
        on, the structure is static, and non-finite values are the divergence guard's business
        (a NaN loss, not a ``ValueError``)."""
        with pyro.validation_enabled(False):
            return -self.elbo_sum() / self.num_particles

    def evaluate_loss(self) -> float:
        """The loss without gradients (as ``SVI.evaluate_loss``)."""
        with torch.no_grad():
            return float(self.differentiable_loss())


def _guide_kind(guide: Any) -> str:
    """``"packed"``, ``"meanfield"`` or the reason the guide has no fast path."""
    cls = type(guide)
    if isinstance(guide, AutoNormal):
        if cls.forward is AutoNormal.forward and cls._get_loc_and_scale is AutoNormal._get_loc_and_scale:
            return "meanfield"
        return f"guide {cls.__name__} overrides AutoNormal's sampling"
    if isinstance(guide, AutoContinuous):
        standard = cls.sample_latent is AutoContinuous.sample_latent or callable(
            getattr(guide, "latent_distribution", None)
        )
        if cls.forward is AutoContinuous.forward and standard:
            return "packed"
        return f"guide {cls.__name__} overrides AutoContinuous's sampling"
    return f"guide {cls.__name__} is not an AutoContinuous guide or AutoNormal"


def plan(
    model: Callable,
    guide: Any,
    args: tuple,
    kwargs: dict,
    *,
    num_particles: int = 1,
    vectorize_particles: bool = True,
    loss: Any = None,
) -> tuple[FastELBO | None, str]:
    """Decide whether the fast path applies; return ``(FastELBO, "")`` or ``(None, reason)``.

    The guide must already be set up (its ``prototype_trace`` built). Runs the model twice, on
    different draws, off the random stream and outside any enclosing handler: sites whose names,
    shapes or plates differ between the runs mean dynamic structure.

    Args:
        model, guide, args, kwargs: as for :func:`pyro_nf.fit`.
        num_particles: particles per estimate.
        vectorize_particles: ``False`` asks for a Python loop over particles: not the fast path.
        loss: ``fit(loss=...)``: anything but ``None`` (a chosen ELBO) is not the fast path.
    """
    if loss is not None:
        name = loss if isinstance(loss, str) else type(loss).__name__
        return None, f"loss={name} was given"
    if num_particles > 1 and not vectorize_particles:
        return None, "vectorize_particles=False"
    kind = _guide_kind(guide)
    if kind not in ("packed", "meanfield"):
        return None, kind
    with isolated_rng(), poutine.block():  # two runs on different draws of the random stream
        first = poutine.trace(model).get_trace(*args, **kwargs)
        second = poutine.trace(model).get_trace(*args, **kwargs)
    for name, site in first.nodes.items():
        if site["type"] != "sample":
            continue
        if site["infer"].get("enumerate") == "parallel":
            return None, f"site {name!r} is enumerated (TraceEnum_ELBO)"
        if site["is_observed"] or site_is_subsample(site):
            continue
        for f in site["cond_indep_stack"]:
            if f.full_size is not None and f.full_size != f.size:
                return None, f"latent site {name!r} is local to the subsampled plate {f.name!r}"
    if _structure(first) != _structure(second):
        diff = sorted(set(_structure(first)) ^ set(_structure(second)))
        return None, f"dynamic structure: the model's sample sites differ between two runs ({diff[0][0]!r})"
    latent = {
        n
        for n, s in first.nodes.items()
        if s["type"] == "sample"
        and not s["is_observed"]
        and not site_is_subsample(s)
        and not s["infer"].get("is_auxiliary")
    }
    proto = getattr(guide, "prototype_trace", None)
    if proto is None:
        return None, "the guide is not set up (call it once first)"
    covered = {name for name, _ in proto.iter_stochastic_nodes()}
    if covered != latent:
        return None, (f"the guide covers latent sites {sorted(covered)} but the model has {sorted(latent)}")
    fast = FastELBO(
        model, guide, args, kwargs, num_particles=num_particles, max_plate_nesting=_max_plate_nesting(first)
    )
    return fast, ""
