"""Checks and helpers shared by every pyro_nf guide: which model sites are latent, and the
clear errors for models a guide cannot serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample


def is_enumerated(msg: dict) -> bool:
    """Whether a sample site is enumerated in parallel (left to ``TraceEnum_ELBO``)."""
    return msg.get("type") == "sample" and (msg.get("infer") or {}).get("enumerate") == "parallel"


def is_latent(msg: dict) -> bool:
    """The one definition of a latent site: a sample site that is not observed, not a plate's
    subsample indices and not a guide's auxiliary variable. (Enumerated discrete sites are latent
    too; guides hide them with :func:`hide_non_latent` and leave them to ``TraceEnum_ELBO``.)"""
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and not site_is_subsample(msg)
        and not (msg.get("infer") or {}).get("is_auxiliary")
    )


def hide_non_latent(msg: dict) -> bool:
    """Prototype hide-function: keep only the continuous latent sample sites a guide models
    (observed, subsample and enumerated sites are hidden)."""
    return not is_latent(msg) or is_enumerated(msg)


def check_model_sites(
    model: Callable, args: tuple, kwargs: dict, guide_name: str, allow_subsampled_latents: bool = False
) -> poutine.Trace:
    """Trace ``model`` once and raise a clear error for sites the guide cannot serve.

    Raises:
        ValueError: a discrete latent site that is not enumerated; a latent site inside a
            subsampled plate (unless ``allow_subsampled_latents``); no latent sites at all.
    """

    def hide(msg: dict) -> bool:
        return not is_latent(msg)

    trace = poutine.block(poutine.trace(poutine.block(model, hide_fn=hide)).get_trace)(*args, **kwargs)
    latent = []
    for name, site in trace.iter_stochastic_nodes():
        fn: Any = site["fn"]
        if getattr(fn.support, "is_discrete", False):
            if is_enumerated(site):
                continue
            raise ValueError(
                f"{guide_name}: latent site {name!r} is discrete ({type(fn).__name__}); a "
                "continuous guide cannot sample it. Enumerate it instead: decorate the model "
                "with pyro.infer.config_enumerate (or pass infer={'enumerate': 'parallel'}) and "
                "fit with TraceEnum_ELBO."
            )
        if not allow_subsampled_latents:
            for frame in site["cond_indep_stack"]:
                if frame.full_size is not None and frame.full_size != frame.size:
                    raise ValueError(
                        f"{guide_name}: latent site {name!r} is local to the subsampled plate "
                        f"{frame.name!r} (subsample {frame.size} of {frame.full_size}). A global "
                        "guide over one joint latent vector would train on the wrong variables; "
                        "use AutoNormal ('meanfield'), an amortised guide, or do not subsample "
                        "that plate."
                    )
        latent.append(name)
    if not latent:
        raise ValueError(
            f"{guide_name}: the model has no continuous latent sample sites to fit (observed, "
            "enumerated and subsample sites are not latent)."
        )
    return trace
