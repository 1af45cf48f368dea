"""Fit several guides on one model and compare them side by side.

:func:`compare` answers the modeller's question "is a flow worth it for *my* model, compared with
mean-field?": it fits every guide with :func:`pyro_nf.fit`, draws with
:func:`pyro_nf.to_inference_data`, checks the importance weights with
:func:`pyro_nf.diagnose` and, given trusted draws or summaries (a :class:`Reference`),
measures how far each guide's marginals are from them. The result is a :class:`Comparison`: a table, the
``InferenceData`` and fit of every guide, plots, and :meth:`Comparison.save` for a report folder.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyro
from tqdm.auto import tqdm

from pyro_nf.comparison.pipeline import fit_and_evaluate
from pyro_nf.comparison.reference import (
    Reference,
    _aggregate,
    latent_supports,
    reference_errors,
    wasserstein_unconstrained,
)
from pyro_nf.comparison.reparam import model_sites, reparametrize
from pyro_nf.comparison.result import Comparison
from pyro_nf.guides.registry import GUIDES
from pyro_nf.training.errors import FitDivergedError
from pyro_nf.training.loop import DEFAULT_NUM_STEPS as FIT_DEFAULT_NUM_STEPS
from pyro_nf.training.loop import fit

__all__ = ["DEFAULT_FIT_KWARGS", "DEFAULT_GUIDES", "DEFAULT_NUM_STEPS", "DEFAULT_TIME_BUDGET", "compare"]

#: Guides fitted by default: the two Gaussian baselines and the two flows that won at equal wall time. MAF and
#: planar only on request: in 60 s per guide MAF (D sequential passes to sample) reached k-hat 0.84 on both
#: the funnel and centred eight schools, against 0.59 / 0.67 for the best flow.
DEFAULT_GUIDES: tuple[str, ...] = ("meanfield", "fullrank", "iaf", "realnvp")
#: SVI steps per guide at most: twice ``fit()``'s default, within :data:`DEFAULT_TIME_BUDGET` (the funnel's
#: log-scale sd ratio, RealNVP, seeds 0 / 1: 0.926 / 0.928 at 10,000 steps, 0.948 / 0.961 at 20,000).
DEFAULT_NUM_STEPS: int = 2 * FIT_DEFAULT_NUM_STEPS
#: Seconds each guide may fit: every guide gets the same budget, so ``pyro-nf compare funnel`` (four guides)
#: finishes within about four minutes on two CPU cores.
DEFAULT_TIME_BUDGET: float = 75.0
#: What every ``fit()`` in :func:`compare` gets unless ``fit_kwargs`` overrides it: ``fit()``'s own recipe
#: (16 particles per step, Adam at 0.01 decaying to a tenth, the sticking-the-landing gradient for the second
#: half) within :data:`DEFAULT_NUM_STEPS` steps or :data:`DEFAULT_TIME_BUDGET` seconds.
DEFAULT_FIT_KWARGS: dict[str, Any] = {"num_steps": DEFAULT_NUM_STEPS, "time_budget": DEFAULT_TIME_BUDGET}


def check_fit_kwargs(fit_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``fit_kwargs`` as a dict, refusing keys that are not options of :func:`pyro_nf.fit` (they would
    otherwise reach the model as data)."""
    opts = dict(fit_kwargs or {})
    known = [
        p.name for p in inspect.signature(fit).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(opts) - set(known))
    if unknown:
        hints = [
            f"{u!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, known, 1)) else "")
            for u in unknown
        ]
        raise ValueError(
            f"fit_kwargs has unknown fit option(s) {', '.join(hints)}; fit options: {', '.join(known)} "
            "(pass model data as keyword arguments of compare itself)"
        )
    return opts


def _check_guides(guides: Sequence[str], guide_kwargs: Mapping[str, Any]) -> list[str]:

    names = GUIDES.check([guides] if isinstance(guides, str) else guides)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"guides must be a non-empty list of distinct names, got {names}")
    stray = set(guide_kwargs) - set(names)
    if stray:
        raise ValueError(f"guide_kwargs names guide(s) not being compared: {sorted(stray)}")
    return names


def _diverged_row(name: str, err: FitDivergedError) -> dict[str, Any]:
    """The table row of a guide whose fit the divergence guard abandoned: no draws, no metrics."""
    nan = float("nan")
    return {"guide": name, "elbo": nan, "iwelbo": nan, "khat": nan, "verdict": "diverged", "ess": nan}


def _as_reference(
    reference: Any, model: Callable, args: tuple, model_kwargs: dict, seed: int, progress: bool
) -> Reference | None:
    if reference is None or isinstance(reference, Reference):
        return reference
    if isinstance(reference, str):
        if reference != "nuts":
            raise ValueError(f"reference string must be 'nuts', got {reference!r}")
        return Reference.from_nuts(model, *args, seed=seed, progress=progress, **model_kwargs)
    if hasattr(reference, "groups") and hasattr(reference, "posterior"):
        return Reference.from_idata(reference)
    if hasattr(reference, "reference") and hasattr(reference, "exact_sampler"):  # an Example
        return Reference.from_example(reference, seed=seed)
    if callable(reference):
        return Reference.from_sampler(reference, seed=seed)
    if isinstance(reference, Mapping):
        values = list(reference.values())
        if values and all(isinstance(v, Mapping) for v in values):
            return Reference.from_summary(reference)
        return Reference.from_draws(reference)
    raise TypeError(
        f"cannot use a {type(reference).__name__} as a reference: pass an "
        "InferenceData, a summary dict, draws, an exact sampler, a Reference or 'nuts'"
    )


def compare(
    model: Callable,
    *args: Any,
    guides: Sequence[str] = DEFAULT_GUIDES,
    guide_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    reference: Any = None,
    seed: int = 0,
    num_samples: int = 4000,
    diagnose_samples: int = 40_000,
    progress: bool = True,
    model_name: str | None = None,
    var_names: Sequence[str] | None = None,
    reparam: str | None = None,
    **model_kwargs: Any,
) -> Comparison:
    """Fit each guide on ``model(*args, **model_kwargs)`` and tabulate how well each did.

    Args:
        model: a Pyro model.
        *args: the model's positional arguments.
        guides: registry names (see :func:`pyro_nf.available_guides`).
        guide_kwargs: guide name -> constructor options, e.g. ``{"maf": {"num_flows": 4}}``.
        fit_kwargs: options for every :func:`pyro_nf.fit` call, over
            :data:`DEFAULT_FIT_KWARGS` (``fit()``'s defaults within ``time_budget=75`` seconds per guide).
        reference: ``None``; a :class:`Reference`; a built-in ``Example`` (its shipped reference);
            an ``InferenceData`` of trusted draws; a
            summary dict ``site -> {"mean", "sd", "q25", ...}`` (distances and overlays then stay
            empty); a dict of draws ``site -> (n, *shape)``; an exact sampler
            ``f(num_samples, seed)``; or ``"nuts"`` (Pyro NUTS, 1 chain, 500 warm-up, 1000 draws).
        seed: seeds the reference, each guide's initialisation, fit and draws (every guide starts
            from the same seed, so the order of ``guides`` does not matter). Each guide is fitted
            in its own param-store scope under a name nothing else uses: the param store's contents
            before the call are left exactly as they were.
        num_samples: draws per guide in its ``InferenceData`` (these feed the reference metrics).
        diagnose_samples: importance samples per guide for k-hat, ESS, ELBO and IW-ELBO. k-hat from
            10,000 draws is noisy near the 0.7 line (one RealNVP on centred eight schools: 0.51-0.78 over
            five draw seeds); the default 40,000 narrows it.
        progress: progress bar per guide.
        model_name: name for plots and the report (default: the model function's name).
        var_names: variables for the pair plot (default: the first three scalar coordinates).
        reparam: ``None`` fits the model as written; ``"learnable"`` fits every guide to the model with
            each real-support location-scale latent site centred by a learnt amount (Variationally
            Inferred Parameterisation, :mod:`pyro_nf.comparison.reparam`), ``"noncentred"`` to the fully
            non-centred model. Every guide gets the same model; draws, k-hat and reference metrics are
            still of the model's own sites (k-hat is invariant to the change of variables).
        **model_kwargs: the model's keyword arguments (data).

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: unknown guide name or unusable reference.

    Example:
        >>> from pyro_nf.examples import get_example
        >>> ex = get_example("banana")
        >>> cmp = compare(ex.model, guides=["meanfield", "maf"], fit_kwargs={"num_steps": 20},
        ...               num_samples=100, diagnose_samples=100, progress=False, **ex.data)
        >>> list(cmp.table.index)
        ['meanfield', 'maf']
    """
    guide_kwargs = dict(guide_kwargs or {})
    names = _check_guides(guides, guide_kwargs)
    ref = _as_reference(reference, model, args, model_kwargs, seed, progress)
    supports = latent_supports(model, *args, **model_kwargs) if ref is not None else {}
    fit_opts = {**DEFAULT_FIT_KWARGS, "seed": seed, "progress": progress, **check_fit_kwargs(fit_kwargs)}
    fit_model = model if reparam is None else reparametrize(model, reparam)
    own_sites = model_sites(model, *args, **model_kwargs) if reparam is not None else set()

    rows, idatas, fits, diags, errors = [], {}, {}, {}, []
    for i, name in enumerate(names):
        if progress:
            tqdm.write(f"[{i + 1}/{len(names)}] {name}")
        with pyro.get_param_store().scope():
            try:
                out = fit_and_evaluate(
                    fit_model,
                    name,
                    *args,
                    seed=seed,
                    guide_kwargs=guide_kwargs.get(name, {}),
                    fit_kwargs=fit_opts,
                    num_samples=num_samples,
                    diagnose_samples=diagnose_samples,
                    **model_kwargs,
                )
            except FitDivergedError as err:  # no draws from an abandoned fit: a row that says so
                rows.append(_diverged_row(name, err))
                if progress:
                    tqdm.write(f"{name}: diverged, left out of the draws and plots ({err})")
                continue
        guide, result, idata, diag = out.guide, out.fit, out.idata, out.diagnosis
        if reparam is not None:  # report the model's own sites, not the auxiliary ones the guide fitted
            post = idata.posterior
            idata.posterior = post.drop_vars([v for v in post.data_vars if v not in own_sites])
        steps_done = max(1, len(result.losses))
        row = {
            "guide": name,
            "elbo": float(diag.elbo),
            "iwelbo": float(diag.iwelbo),
            "khat": float(diag.khat),
            "verdict": str(diag.verdict).split(":")[0],
            "ess": float(diag.ess),
            "fit_seconds": float(result.wall_seconds),
            "ms_per_step": 1000.0 * float(result.wall_seconds) / steps_done,
            "num_params": int(sum(p.numel() for p in guide.parameters())),
            "num_steps": len(result.losses),
            "stop_reason": str(result.stop_reason),
        }
        if ref is not None:
            err = reference_errors(idata, ref)
            row.update(_aggregate(err))
            row["w1_unconstrained"] = wasserstein_unconstrained(idata, ref, supports)
            errors.append(err.assign(guide=name))
        rows.append(row)
        idatas[name], fits[name], diags[name] = idata, result, diag

    if not idatas:
        raise FitDivergedError(
            f"every guide's fit diverged ({', '.join(names)}); try a smaller lr in fit_kwargs",
            step=-1,
            lr=float("nan"),
            sites=[],
            params=[],
        )
    table = pd.DataFrame(rows).set_index("guide")
    error_table = (
        pd.concat(errors, ignore_index=True)[["guide", "parameter", "mean_error", "sd_ratio", "iqr_ratio"]]
        if errors
        else pd.DataFrame(columns=["guide", "parameter", "mean_error", "sd_ratio", "iqr_ratio"])
    )
    return Comparison(
        table=table,
        idata=idatas,
        fits=fits,
        diagnostics=diags,
        errors=error_table,
        reference=ref,
        model_name=(model_name or getattr(model, "__name__", "model"))
        + ("" if reparam is None else f" (reparam={reparam})"),
        var_names=list(var_names) if var_names else None,
    )
