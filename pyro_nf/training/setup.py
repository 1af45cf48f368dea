r"""Set-up and checks behind :func:`pyro_nf.fit`: input validation, loss and optimiser choice.

Everything here that runs the model or the guide does so under :func:`poutine.block` and
:func:`~pyro_nf._util.isolated_rng`, so the checks neither record sites in an enclosing trace nor
consume the random stream the fit itself uses.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.optim import PyroOptim
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_nf._sites import is_enumerated, is_latent
from pyro_nf._util import check_positive_int, isolated_rng
from pyro_nf.training.errors import FitInputError, is_divergence_error

#: Loss names accepted by ``fit(loss=...)`` as strings.
LOSSES: dict[str, type[ELBO]] = {
    "Trace_ELBO": Trace_ELBO,
    "TraceEnum_ELBO": TraceEnum_ELBO,
    "TraceMeanField_ELBO": TraceMeanField_ELBO,
    "TraceGraph_ELBO": TraceGraph_ELBO,
}
OPTIMIZERS = ("adam", "clipped_adam")


class _SiteTracker(Messenger):
    """Remembers the last sample site the model reached, to name it when the model raises."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.last_done: str | None = None

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample":
            self.current = msg["name"]

    def _postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "sample":
            self.last_done, self.current = msg["name"], None


def _arg_names(model: Callable, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    try:
        names = list(inspect.signature(model).parameters)
    except (TypeError, ValueError):
        names = []
    out = [
        (names[i] if i < len(names) and not names[i].startswith("*") else f"#{i}", a)
        for i, a in enumerate(args)
    ]
    return out + list(kwargs.items())


def _nan_arguments(model: Callable, args: tuple, kwargs: dict) -> list[str]:
    """Names of tensor arguments (or tensors one level inside lists/tuples/dicts) holding NaN."""
    found = []
    for name, value in _arg_names(model, args, kwargs):
        items = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, (list, tuple))
            else [(None, value)]
        )
        for key, item in items:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                n = int(torch.isnan(item).sum())
                if n:
                    where = name if key is None else f"{name}[{key!r}]"
                    found.append(f"{where!r} ({n} NaN of {item.numel()})")
    return found


def _failing_site(err: Exception, tracker: _SiteTracker) -> str:
    match = re.search(r"at site '?([^'\s:]+)'?", str(err))
    if match:
        return f"site {match.group(1)!r}"
    if tracker.current is not None:
        return f"site {tracker.current!r}"
    if tracker.last_done is not None:
        return f"the code after site {tracker.last_done!r}"
    return "the code before its first sample site"


def trace_model(model: Callable, args: tuple, kwargs: dict) -> poutine.Trace:
    """Trace the model once on its arguments and check them; return the trace (with log probs).

    Raises:
        FitInputError: the model raises on these arguments (re-raised naming the site), or observed
            data hold NaN that reaches the likelihood.
    """
    nan_args = _nan_arguments(model, args, kwargs)
    nan_note = f" Arguments holding NaN: {', '.join(nan_args)}." if nan_args else ""
    tracker = _SiteTracker()
    try:
        with isolated_rng(), poutine.block():
            trace = poutine.trace(tracker(model)).get_trace(*args, **kwargs)
            trace.compute_log_prob()
    except Exception as err:  # re-raised with the site named; the original is chained
        raise FitInputError(
            f"the model fails on the given arguments at "
            f"{_failing_site(err, tracker)}: {type(err).__name__}: {err}"
            f"{nan_note}"
        ) from err
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or site.get("mask") is not None:
            continue
        value = site["value"]
        nan_obs = isinstance(value, torch.Tensor) and bool(torch.isnan(value).any())
        if nan_obs or (nan_args and not math.isfinite(float(site["log_prob_sum"]))):
            what = "holds NaN" if nan_obs else "has a NaN log likelihood"
            raise FitInputError(
                f"observed site {name!r} {what}: the likelihood would propagate it "
                f"into every gradient.{nan_note} Remove or impute the missing "
                "values, or mask them (pyro.sample(..., obs_mask=...) or "
                "poutine.mask)."
            )
    return trace


def latent_sites(trace: poutine.Trace) -> dict[str, torch.Size]:
    """Unobserved, non-auxiliary sample sites of a trace, with their value shapes."""
    return {name: site["value"].shape for name, site in trace.nodes.items() if is_latent(site)}


def uses_enumeration(trace: poutine.Trace) -> bool:
    """Whether any sample site asks for parallel enumeration (``config_enumerate``)."""
    return any(is_enumerated(site) for site in trace.nodes.values())


def setup_guide(guide: Callable, model_trace: poutine.Trace, args: tuple, kwargs: dict) -> None:
    """Run the guide once (creating its parameters) and check it was built for this model.

    Raises:
        FitInputError: the guide fails on these arguments, samples sites the model lacks, or gives a
            shared site a different shape than the model does.
    """
    try:
        with isolated_rng(), poutine.block():
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    except Exception as err:
        raise FitInputError(
            f"running the guide on the model's arguments failed "
            f"({type(err).__name__}: {err}); check the guide's options and that "
            "it was built for this model"
        ) from err
    in_model = latent_sites(model_trace)
    in_guide = latent_sites(guide_trace)
    extra = sorted(set(in_guide) - set(in_model))
    if extra:
        raise FitInputError(
            f"the guide was built for another model: it samples {extra}, which "
            f"this model does not have (model latent sites: {sorted(in_model)})"
        )
    shapes = [
        f"{n!r}: guide {tuple(s)} vs model {tuple(in_model[n])}"
        for n, s in in_guide.items()
        if s != in_model[n]
    ]
    if shapes:
        raise FitInputError(
            "the guide was built for another model or data size; site shapes differ: " + "; ".join(shapes)
        )


def param_names(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> list[str]:
    """Names of the param-store parameters the model and guide use, in a stable order."""
    names: dict[str, None] = {}
    with isolated_rng(), poutine.block():
        for fn in (guide, model):
            trace = poutine.trace(fn, param_only=True).get_trace(*args, **kwargs)
            names.update(dict.fromkeys(trace.param_nodes))
    return list(names)


def make_loss(
    loss: ELBO | str | None, enumerates: bool, num_particles: int, vectorize_particles: bool
) -> ELBO:
    """Build the ELBO: the user's instance, a named class, or Trace(Enum)_ELBO by enumeration."""
    if isinstance(loss, ELBO):
        if num_particles != 1:
            raise ValueError(
                "num_particles applies to losses fit() builds; set it on the ELBO "
                "instance you pass as loss= instead"
            )
        return loss
    if loss is None:
        cls: type[ELBO] = TraceEnum_ELBO if enumerates else Trace_ELBO
    elif isinstance(loss, str) and loss in LOSSES:
        cls = LOSSES[loss]
    else:
        raise ValueError(f"loss must be None, an ELBO instance or one of {sorted(LOSSES)}; got {loss!r}")
    if enumerates and cls is not TraceEnum_ELBO:
        raise ValueError(
            f"the model enumerates discrete sites; {cls.__name__} cannot handle "
            "them: use loss=None or 'TraceEnum_ELBO'"
        )
    return cls(num_particles=num_particles, vectorize_particles=vectorize_particles)


def guess_plate_nesting(elbo: ELBO, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> None:
    """Let Pyro infer ``max_plate_nesting`` now, off the fit's random stream (resumes stay exact)."""
    if getattr(elbo, "max_plate_nesting", None) == math.inf:
        logger = logging.getLogger(type(elbo)._guess_max_plate_nesting.__module__)
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))  # Pyro logs the guess at INFO on every fit
        try:
            with isolated_rng():
                elbo._guess_max_plate_nesting(model, guide, args, kwargs)
        finally:
            logger.setLevel(level)


def make_optimizer(
    optimizer: str | PyroOptim, lr: float, lr_decay: float | None, num_steps: int
) -> PyroOptim:
    """Build Pyro's Adam / ClippedAdam (with exponential decay to ``lr * lr_decay``) or pass through."""
    if isinstance(optimizer, PyroOptim):
        if lr_decay is not None:
            raise ValueError(
                "lr_decay applies to optimizers fit() builds; configure decay on the "
                "PyroOptim you pass instead"
            )
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {OPTIMIZERS} or a pyro.optim.PyroOptim; got {optimizer!r}"
        )
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    if lr_decay is not None and not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1]; got {lr_decay!r}")
    gamma = 1.0 if lr_decay is None else lr_decay ** (1.0 / num_steps)
    if optimizer == "clipped_adam":
        return pyro.optim.ClippedAdam({"lr": lr, "lrd": gamma})
    if lr_decay is None:
        return pyro.optim.Adam({"lr": lr})
    return pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "gamma": gamma})


def torch_optimizers(optim: PyroOptim) -> list[torch.optim.Optimizer]:
    """The per-parameter torch optimizers inside a PyroOptim (unwrapping LR schedulers)."""
    return [getattr(obj, "optimizer", obj) for obj in optim.optim_objs.values()]


def diagnose_nonfinite(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    params: dict[str, torch.Tensor],
    num_draws: int = 20,
) -> tuple[list[str], list[str]]:
    """Return (non-finite parameter names, sites with non-finite draws or log densities).

    The guide is run ``num_draws`` times (a divergence often shows in only some draws) and the model
    replayed on each draw; sites are listed in order of first appearance.
    """
    bad_params = [n for n, p in params.items() if not bool(torch.isfinite(p).all())]
    sites: dict[str, None] = {}
    with isolated_rng(), poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
        for _ in range(num_draws):
            try:
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                    *args, **kwargs
                )
            except Exception:  # best effort: the error message still names the parameters
                continue
            for trace in (guide_trace, model_trace):
                for name, site in trace.nodes.items():
                    if (
                        site["type"] != "sample"
                        or site["infer"].get("is_auxiliary")
                        or site_is_subsample(site)
                    ):
                        continue
                    try:
                        value_ok = bool(torch.isfinite(site["value"]).all())
                        lp_ok = bool(torch.isfinite(site["fn"].log_prob(site["value"])).all())
                    except Exception:
                        value_ok = lp_ok = False
                    if not (value_ok and lp_ok):
                        sites[name] = None
    return bad_params, list(sites)


#: attribute of a guide holding the optimiser moments of its last :func:`pyro_nf.fit`
FIT_STATE_ATTR = "_pyro_nf_optimizer_state"


def _copy_state(state: dict) -> dict:
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def continue_moments(guide: Callable, optim: PyroOptim, opt_name: str) -> bool:
    """Let a second ``fit()`` of one guide continue the first: the per-parameter optimiser state
    (Adam's moment estimates and step count) saved on the guide by :func:`save_moments` is loaded
    into each of this fit's optimisers as Pyro creates it; the learning rate is this fit's.

    A fresh Adam's first updates move every parameter by about ``lr`` whatever its gradient, which
    knocks a fitted flow far off its optimum (centered eight schools, AutoIAF, lr 0.05: ELBO -37.7
    before a second fit, first losses of the second up to 4e5). Only the same optimiser kind, and
    parameters of unchanged shapes, continue. Returns whether saved state was found.
    """
    saved = getattr(guide, FIT_STATE_ATTR, None)
    if not saved or saved.get("optimizer") != opt_name:
        return False
    moments, store, make = saved["moments"], pyro.get_param_store(), optim._get_optim

    def get_optim(param: torch.Tensor) -> Any:
        obj = make(param)
        state = moments.get(store.param_name(param))
        shapes_ok = state is not None and all(
            v.shape == param.shape for v in state.values() if isinstance(v, torch.Tensor) and v.dim()
        )
        if shapes_ok:
            getattr(obj, "optimizer", obj).state[param] = _copy_state(state)
        return obj

    optim._get_optim = get_optim  # type: ignore[method-assign]
    return True


def save_moments(guide: Callable, optim: PyroOptim, opt_name: str) -> None:
    """Keep this fit's per-parameter optimiser state on the guide, for :func:`continue_moments`, and undo
    that function's patch of ``optim`` (its closure refers back to ``optim``: a reference cycle that
    would keep this fit's optimiser state, GBs at large D, alive until Python's cyclic collector runs)."""
    optim.__dict__.pop("_get_optim", None)
    if not isinstance(guide, torch.nn.Module):
        return
    store, moments = pyro.get_param_store(), {}
    for param, obj in optim.optim_objs.items():
        inner = getattr(obj, "optimizer", obj)
        name = store.param_name(param)
        if name is not None and param in inner.state:
            moments[name] = _copy_state(inner.state[param])
    guide.__dict__[FIT_STATE_ATTR] = {"optimizer": opt_name, "moments": moments}


def check_fit_options(*, num_particles: Any, seed: Any) -> None:
    """Validate ``fit()`` options that Pyro would otherwise reject with a raw error, or accept wrongly.

    Raises:
        ValueError: ``num_particles`` is not an integer >= 1, or ``seed`` is neither None nor an
            integer >= 0.
    """
    check_positive_int("num_particles", num_particles)
    if seed is not None:
        check_positive_int("seed", seed, minimum=0)


def vectorization_problem(elbo: ELBO, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> str:
    """Why ``elbo``'s vectorised particles do not work for ``model`` ('' if they do): the first line of
    the error the loss raises, or a site whose log-density gains a dimension left of the particle plate
    (a model that broadcasts instead of failing, e.g. ``x @ w.unsqueeze(-1)`` with ``w`` of shape
    ``(K, 1, D)``: its particles would be mixed, a wrong ELBO that Pyro does not detect)."""
    try:
        with isolated_rng(), torch.no_grad():
            elbo.loss(model, guide, *args, **kwargs)
            guide_trace = poutine.trace(elbo._vectorized_num_particles(guide)).get_trace(*args, **kwargs)
            replayed = poutine.replay(elbo._vectorized_num_particles(model), trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        if is_divergence_error(err):
            return ""
        return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            shape = tuple(site["fn"].batch_shape)
            if len(shape) > elbo.max_plate_nesting:
                return (
                    f"site {name!r} has batch shape {shape} with {elbo.num_particles} particles: a dimension "
                    "left of the particle plate, so draws of different particles are combined"
                )
    return ""


def initialise(
    init: str | None, model: Callable, guide: Any, model_trace: Any, args: tuple, kwargs: dict, fresh: bool
) -> str:
    """Run the guide's Laplace start on its first fit (see ``fit(init=)``); return the note."""
    if init not in ("laplace", None):
        raise ValueError(f"init must be 'laplace' or None; got {init!r}")
    if init is None:
        return "own start (init=None)"
    if getattr(guide, "_pyro_nf_started", False) or not fresh:
        return "continued (the guide was fitted before, or resumed)"
    method = getattr(guide, "init_to_laplace", None)
    if uses_enumeration(model_trace) or not callable(method):
        note = "own start (enumerated discrete sites)" if callable(method) else "own start (no Laplace start)"
    else:
        note = method(*args, **kwargs)
    guide._pyro_nf_started = True
    return note
