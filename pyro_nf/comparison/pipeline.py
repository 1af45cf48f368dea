r"""The one fit-and-evaluate pipeline: build a guide, fit it, draw from it, diagnose it.

:func:`fit_and_evaluate` is what :func:`pyro_nf.compare`, ``pyro-nf fit``, restarts and the
tutorials call for each guide, so they all seed, fit and score a guide the same way:

1. ``pyro.set_rng_seed(seed)``; build the guide (a registry name or a guide object);
2. :func:`pyro_nf.fit` with ``fit_kwargs`` (seeded with ``seed``);
3. ``pyro.set_rng_seed(seed)``; :func:`pyro_nf.to_inference_data` (``num_samples`` draws) and
   :func:`pyro_nf.diagnose` (``diagnose_samples`` importance draws).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import arviz as az
import pyro
from pyro.nn import PyroModule

from pyro_nf.evaluation.bridge import stack_chains, to_inference_data
from pyro_nf.evaluation.diagnostics import Diagnosis, diagnose
from pyro_nf.guides.registry import make_guide
from pyro_nf.guides.store import claim_unused_name
from pyro_nf.training.loop import FitResult, fit

__all__ = ["FittedGuide", "fit_and_evaluate", "to_inference_data_restarts"]


@dataclass
class FittedGuide:
    """What :func:`fit_and_evaluate` returns.

    Attributes:
        name: the guide's registry name (or its class name when given as an object).
        guide: the fitted guide.
        fit: the :class:`~pyro_nf.FitResult`.
        idata: ``InferenceData`` of its draws (``None`` when ``num_samples=0``).
        diagnosis: the :class:`~pyro_nf.Diagnosis` (``None`` when ``diagnose_samples=0``).
    """

    name: str
    guide: Any
    fit: FitResult
    idata: az.InferenceData | None
    diagnosis: Diagnosis | None


def fit_and_evaluate(
    model: Callable,
    guide: str | Callable,
    *args: Any,
    seed: int = 0,
    guide_kwargs: Mapping[str, Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    num_samples: int = 1000,
    diagnose_samples: int = 10_000,
    **model_kwargs: Any,
) -> FittedGuide:
    """Build (if a name), fit, draw from and diagnose one guide, all from one ``seed``.

    Args:
        model: a Pyro model.
        guide: a registry name (:func:`pyro_nf.available_guides`) or a guide object.
        *args: the model's positional arguments.
        seed: seeds the guide's initialisation, the fit and the draws.
        guide_kwargs: constructor options when ``guide`` is a name.
        fit_kwargs: options of :func:`pyro_nf.fit` (its ``seed`` is ``seed``).
        num_samples: draws kept as ``InferenceData`` (0: none).
        diagnose_samples: importance draws for :func:`pyro_nf.diagnose` (0: no diagnosis).
        **model_kwargs: the model's keyword arguments (data).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("mu", dist.Normal(1.0, 2.0))
        >>> out = fit_and_evaluate(model, "meanfield", fit_kwargs={"num_steps": 50, "progress": False},
        ...                        num_samples=100, diagnose_samples=100)
        >>> out.fit.num_steps, dict(out.idata.posterior.sizes)
        (50, {'chain': 1, 'draw': 100})
    """
    pyro.set_rng_seed(seed)
    if isinstance(guide, str):
        name = guide
        guide = make_guide(guide, model, **dict(guide_kwargs or {}))
        if isinstance(guide, PyroModule):  # built here: a name no param-store entry or live guide uses
            claim_unused_name(guide)
    else:
        if guide_kwargs:
            raise ValueError("guide_kwargs apply only when guide is a registry name")
        name = getattr(guide, "registry_name", "") or type(guide).__name__
    result = fit(model, guide, *args, **{**dict(fit_kwargs or {}), "seed": seed}, **model_kwargs)
    pyro.set_rng_seed(seed)
    idata = (
        to_inference_data(model, guide, *args, num_samples=num_samples, fit=result, **model_kwargs)
        if num_samples
        else None
    )
    diag = (
        diagnose(model, guide, *args, num_samples=diagnose_samples, **model_kwargs)
        if diagnose_samples
        else None
    )
    return FittedGuide(name=name, guide=guide, fit=result, idata=idata, diagnosis=diag)


def to_inference_data_restarts(
    model: Callable,
    guide: str | Callable[[Callable], Callable],
    *args: Any,
    seeds: Sequence[int] = (0, 1, 2, 3),
    num_samples: int = 1000,
    fit_kwargs: Mapping[str, Any] | None = None,
    guide_kwargs: Mapping[str, Any] | None = None,
    **model_kwargs: Any,
) -> az.InferenceData:
    r"""Fit the same guide from :math:`K` seeds and stack the draws as :math:`K` chains.

    Restart :math:`k` runs :func:`fit_and_evaluate` with ``seeds[k]`` on a fresh guide in its own
    param-store scope. If all restarts reach the same optimum the chains agree and
    :math:`\hat R \approx 1`; ``az.rhat`` / ``az.ess`` across restarts flag an optimisation that
    lands in different places (multi-modal posteriors, too few steps).

    Args:
        model: the Pyro model.
        guide: a registry name or a factory ``model -> guide``.
        *args: the model's positional arguments.
        seeds: one seed per restart (chain).
        num_samples: draws per chain.
        fit_kwargs: options of :func:`pyro_nf.fit` (``progress`` defaults to False).
        guide_kwargs: guide settings when ``guide`` is a registry name.
        **model_kwargs: the model's keyword arguments.

    Returns:
        ``InferenceData`` with ``len(seeds)`` chains; attrs add ``restart_seeds`` and
        ``restart_final_elbos`` (JSON lists).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("mu", dist.Normal(1.0, 2.0))
        >>> idata = to_inference_data_restarts(model, "meanfield", seeds=(0, 1), num_samples=100,
        ...                                    fit_kwargs={"num_steps": 100})
        >>> dict(idata.posterior.sizes)
        {'chain': 2, 'draw': 100}
    """
    if not seeds:
        raise ValueError("seeds must name at least one restart")
    options = {"progress": False, **dict(fit_kwargs or {})}
    chains, elbos = [], []
    for seed in seeds:
        with pyro.get_param_store().scope():
            g = guide if isinstance(guide, str) else guide(model)
            out = fit_and_evaluate(
                model,
                g,
                *args,
                seed=int(seed),
                guide_kwargs=guide_kwargs if isinstance(guide, str) else None,
                fit_kwargs=options,
                num_samples=num_samples,
                diagnose_samples=0,
                **model_kwargs,
            )
            elbos.append(-float(out.fit.losses[-1]) if out.fit.losses else math.nan)
            chains.append(out.idata)
    attrs = {"restart_seeds": json.dumps([int(s) for s in seeds]), "restart_final_elbos": json.dumps(elbos)}
    return stack_chains(chains, attrs)
