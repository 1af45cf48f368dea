r"""A Laplace (MAP + Hessian) Gaussian start for guides, kept only where it beats the guide's own start.

On the unconstrained space (Pyro's constraint bijections, as ``AutoContinuous`` packs it) the model's
log density is :math:`\ell(z) = \log p(x, T(z)) + \log|\det J_T(z)|`. The Laplace approximation is
:math:`N(\hat z, H^{-1})` with :math:`\hat z = \arg\max \ell` (L-BFGS with a strong-Wolfe line
search) and :math:`H = -\nabla^2 \ell(\hat z)` (autograd). It solves what first-order VI is slowest
at, badly scaled and strongly correlated posteriors (regressions on raw covariates: kilpisjarvi's
intercept and slope correlate at :math:`-0.9999`; sblrc's sds are :math:`10^{-3}`), in a second or so.

It is wrong where the mode is not where the mass is: a funnel's or a centred hierarchical model's
density grows without bound into the neck, so its "mode" is a point mass. Hence the rule: the
candidate Gaussian is adopted only if its ELBO, estimated with common random numbers on
:data:`NUM_CHECK_DRAWS` draws, is higher than that of the guide's own starting Gaussian (the
``init_loc_fn`` point with ``init_scale``); otherwise the guide keeps its start. Models with
subsampled plates or that fail on the packed latent keep their start too, with the reason.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model():
    ...     pyro.sample("x", dist.Normal(torch.tensor([3.0, -1.0]), torch.tensor([0.01, 2.0])).to_event(1))
    >>> from pyro_nf.guides import AutoIAF
    >>> guide = AutoIAF(model, num_flows=1, hidden_dims=(8,))
    >>> _ = guide()
    >>> guide.init_to_laplace().startswith("laplace")
    True
    >>> [round(v, 3) for v in guide.whiten.scale_tril.diagonal().tolist()]
    [0.01, 2.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to

from pyro_nf._util import isolated_rng

__all__ = [
    "MAX_DIM",
    "NUM_CHECK_DRAWS",
    "LaplaceStart",
    "choose_start",
    "guide_start",
    "laplace_start",
    "packed_log_density",
]

#: draws (common random numbers) for the ELBO check of a candidate start
NUM_CHECK_DRAWS: int = 64
#: above this many latent dimensions the Hessian is not formed and guides keep their own start
MAX_DIM: int = 400


class LaplaceStart:
    """Result of :func:`laplace_start`: ``loc`` and ``scale_tril`` of :math:`N(\\hat z, H^{-1})`,
    ``precision`` :math:`H`, and the log density ``log_density`` of a packed latent."""

    def __init__(self, loc: torch.Tensor, precision: torch.Tensor, log_density: Callable) -> None:
        self.loc, self.precision, self.log_density = loc, precision, log_density
        self.scale_tril = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(precision)))

    def elbo(self, loc: torch.Tensor, scale_tril: torch.Tensor) -> float:
        """ELBO of :math:`N(\\mathrm{loc}, LL^\\top)`: :data:`NUM_CHECK_DRAWS` fixed draws plus the
        exact entropy; ``-inf`` if any draw's density is not finite."""
        with isolated_rng(), torch.no_grad():
            torch.manual_seed(0)
            eps = torch.randn(NUM_CHECK_DRAWS, loc.shape[-1], dtype=loc.dtype, device=loc.device)
            values = [float(self.log_density(loc + scale_tril @ e)) for e in eps]
        if not all(map(math.isfinite, values)):
            return -math.inf
        dim = loc.shape[-1]
        entropy = 0.5 * dim * (1.0 + math.log(2 * math.pi)) + float(
            torch.diagonal(scale_tril).abs().log().sum()
        )
        return sum(values) / len(values) + entropy


def packed_log_density(model: Callable, prototype: poutine.Trace, args: tuple, kwargs: dict) -> tuple:
    """``(log_density, z0)``: :math:`\\ell` of a packed unconstrained latent (sites in prototype order,
    as ``AutoContinuous`` packs them) and the packed prototype values."""
    sites, parts = [], []
    for name, site in prototype.iter_stochastic_nodes():
        transform = biject_to(site["fn"].support)
        u = transform.inv(site["value"]).detach()
        sites.append((name, transform, u.shape, u.numel()))
        parts.append(u.reshape(-1))
    z0 = torch.cat(parts)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        values, log_det, offset = {}, z.new_zeros(()), 0
        for name, transform, shape, numel in sites:
            u = z[offset : offset + numel].reshape(shape)
            offset += numel
            value = transform(u)
            log_det = log_det + transform.log_abs_det_jacobian(u, value).sum()
            values[name] = value
        with poutine.block():
            trace = poutine.trace(poutine.condition(model, values)).get_trace(*args, **kwargs)
        return trace.log_prob_sum() + log_det

    return log_density, z0


def _map(log_density: Callable, z0: torch.Tensor, max_iter: int) -> torch.Tensor | None:
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [z],
        lr=1.0,
        max_iter=max_iter,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=50,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -log_density(z)
        if torch.isfinite(loss):
            loss.backward()
        return loss

    try:
        with pyro.validation_enabled(False):
            opt.step(closure)
    except (RuntimeError, ValueError, IndexError):  # torch's line search fails on non-finite values
        return None
    z = z.detach()
    return z if bool(torch.isfinite(z).all()) else None


def laplace_start(
    model: Callable, prototype: poutine.Trace, args: tuple, kwargs: dict, max_iter: int = 200
) -> tuple[LaplaceStart | None, str]:
    """The Laplace Gaussian of ``model`` at its MAP, or ``(None, reason)``; off the random stream."""
    with isolated_rng(), poutine.block():
        model_trace = poutine.trace(model).get_trace(*args, **kwargs)
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and any(
            f.full_size is not None and f.full_size != f.size for f in site["cond_indep_stack"]
        ):
            return None, "a subsampled plate"
    try:
        with isolated_rng():
            log_density, z0 = packed_log_density(model, prototype, args, kwargs)
            if z0.numel() > MAX_DIM:
                return None, f"{z0.numel()} latent dimensions > {MAX_DIM}"
            if not math.isfinite(float(log_density(z0).detach())):
                return None, "the start point has a non-finite density"
            z_hat = _map(log_density, z0, max_iter)
            if z_hat is None:
                return None, "the MAP search diverged"
            hess = torch.autograd.functional.hessian(log_density, z_hat)
    except (RuntimeError, ValueError, NotImplementedError) as err:
        return None, f"the model failed on the packed latent ({str(err).splitlines()[0][:120]})"
    precision = -0.5 * (hess + hess.T)
    if not bool(torch.isfinite(precision).all()):
        return None, "the Hessian at the MAP is not finite"
    try:
        return LaplaceStart(z_hat, precision, log_density), ""
    except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
        return None, "the Hessian at the MAP is not negative definite (no mode found)"


def choose_start(
    start: LaplaceStart, candidate: tuple[torch.Tensor, torch.Tensor], own: tuple[torch.Tensor, torch.Tensor]
) -> tuple[bool, str]:
    """Whether ``candidate`` (loc, scale_tril) beats ``own`` on the check ELBO, and a note saying so."""
    new, old = start.elbo(*candidate), start.elbo(*own)
    if new > old:
        return True, f"laplace (check ELBO {new:.4g} against {old:.4g} at the guide's own start)"
    return False, f"own start (laplace check ELBO {new:.4g} is not above {old:.4g})"


def guide_start(guide: Any, args: tuple, kwargs: dict) -> tuple[LaplaceStart | None, str]:
    """The Laplace start of ``guide``'s model (setting the guide up first if needed), or ``(None, note)``
    with the note a guide's ``init_to_laplace`` returns when there is none."""
    if guide.prototype_trace is None:
        guide._setup_prototype(*args, **kwargs)
    start, reason = laplace_start(guide.model, guide.prototype_trace, args, kwargs)
    return start, "" if start is not None else f"own start (no Laplace start: {reason})"


def set_constrained(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Write the constrained value of PyroParam ``name`` of a PyroModule in place (its unconstrained
    tensor, shared with Pyro's param store, keeps its identity)."""
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    constraint, _ = module._pyro_params[leaf]
    target = getattr(module, f"{leaf}_unconstrained")
    with torch.no_grad():
        target.copy_(torch.distributions.transform_to(constraint).inv(value.to(target)))
