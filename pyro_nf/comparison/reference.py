"""Trusted reference posteriors and the distances of a guide's draws from them.

A :class:`Reference` holds per-site summaries (mean, sd, quantiles) and, where they exist, draws;
:func:`reference_errors` tabulates per-parameter standardised mean error, sd ratio and IQR ratio, and
:func:`wasserstein_unconstrained` the mean 1-Wasserstein distance on the unconstrained scale.
Used by :func:`pyro_nf.compare`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to

from pyro_nf._sites import is_latent

if TYPE_CHECKING:
    import arviz as az

__all__ = ["Reference", "latent_supports", "reference_errors", "wasserstein_unconstrained"]

_QUANTILES = {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}
_ERROR_COLUMNS = [
    "mean_error_max",
    "mean_error_median",
    "sd_ratio_worst",
    "sd_ratio_median",
    "iqr_ratio_worst",
    "iqr_ratio_median",
    "w1_unconstrained",
]


def _summarise_draws(draws: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for site, x in draws.items():
        x = np.asarray(x, dtype=float)
        stats = {"mean": x.mean(0), "sd": x.std(0, ddof=1)}
        stats.update({k: np.quantile(x, q, axis=0) for k, q in _QUANTILES.items()})
        out[site] = stats
    return out


@dataclass
class Reference:
    """Trusted posterior marginals (and, where available, draws) to compare guides against.

    Attributes:
        summary: site name -> ``{"mean", "sd"}`` and optionally ``q05 ... q95``, each an array of
            the site's shape.
        draws: site name -> array ``(num_draws, *site_shape)`` on the constrained scale, or ``None``
            for a summary-only reference (then no distance and no overlays).
        source: a few words saying where the reference came from (shown in the report).

    Example:
        >>> ref = Reference.from_draws({"mu": np.random.default_rng(0).normal(size=(500,))})
        >>> round(float(ref.summary["mu"]["sd"]), 1)
        1.0
    """

    summary: dict[str, dict[str, np.ndarray]]
    draws: dict[str, np.ndarray] | None = None
    source: str = "reference"

    @classmethod
    def from_draws(cls, draws: Mapping[str, Any], source: str = "reference draws") -> Reference:
        """Reference from draws ``site -> (num_draws, *shape)`` (NumPy arrays or tensors)."""
        arrays = {k: np.asarray(torch.as_tensor(v).detach().cpu().double()) for k, v in draws.items()}
        return cls(_summarise_draws(arrays), arrays, source)

    @classmethod
    def from_summary(
        cls, summary: Mapping[str, Mapping[str, Any]], source: str = "reference summary"
    ) -> Reference:
        """Summary-only reference: ``site -> {"mean": ..., "sd": ..., "q25": ..., ...}``."""
        clean = {
            site: {
                k: np.asarray(v, dtype=float) for k, v in stats.items() if k in ("mean", "sd", *_QUANTILES)
            }
            for site, stats in summary.items()
        }
        for site, stats in clean.items():
            if "mean" not in stats or "sd" not in stats:
                raise ValueError(f"reference summary for {site!r} needs at least 'mean' and 'sd'")
        return cls(clean, None, source)

    @classmethod
    def from_idata(cls, idata: az.InferenceData, source: str = "InferenceData") -> Reference:
        """Reference from the ``posterior`` group of trusted draws (all chains pooled)."""
        if "posterior" not in idata.groups():
            raise ValueError("reference InferenceData has no 'posterior' group")
        post = idata.posterior
        return cls.from_draws({name: _pooled(post[name]) for name in post.data_vars}, source)

    @classmethod
    def from_sampler(
        cls, sampler: Callable[[int, int], Mapping[str, Any]], num_samples: int = 10_000, seed: int = 0
    ) -> Reference:
        """Reference from an exact sampler ``sampler(num_samples, seed) -> {site: draws}``."""
        return cls.from_draws(sampler(num_samples, seed), f"exact sampler ({num_samples} draws)")

    @classmethod
    def from_nuts(
        cls,
        model: Callable,
        *args: Any,
        num_warmup: int = 500,
        num_samples: int = 1000,
        seed: int = 0,
        progress: bool = False,
        **model_kwargs: Any,
    ) -> Reference:
        """Reference from Pyro's NUTS: 1 chain, ``num_warmup`` warm-up, ``num_samples`` draws."""
        from pyro.infer import MCMC, NUTS

        pyro.set_rng_seed(seed)
        mcmc = MCMC(
            NUTS(model),
            num_samples=num_samples,
            warmup_steps=num_warmup,
            num_chains=1,
            disable_progbar=not progress,
        )
        mcmc.run(*args, **model_kwargs)
        source = f"Pyro NUTS (1 chain, {num_warmup} warm-up, {num_samples} draws, seed {seed})"
        return cls.from_draws(mcmc.get_samples(), source)

    @classmethod
    def from_example(cls, example: Any, num_samples: int = 10_000, seed: int = 0) -> Reference:
        """The reference shipped with a built-in example: its summaries plus draws where it has any.

        Shipped summaries come from the full reference run; the (thinned) shipped draws, or draws
        from the example's exact sampler, serve the distance and the overlays.
        """
        draws = example.reference_draws
        if draws is None and example.exact_sampler is not None:
            draws = example.exact_sampler(num_samples, seed)
        summary = cls.from_summary(example.reference).summary if example.reference else None
        if draws is None:
            if summary is None:
                raise ValueError(f"example {example.name!r} ships no reference")
            return cls(summary, None, f"shipped summary of {example.name}")
        ref = cls.from_draws(draws, f"shipped reference of {example.name}")
        if summary is not None:
            ref.summary = {site: {**ref.summary.get(site, {}), **stats} for site, stats in summary.items()}
        return ref


def _pooled(da: Any) -> np.ndarray:
    """(chain, draw, *shape) DataArray -> (chain * draw, *shape) array."""
    da = da.transpose("chain", "draw", ...)
    values = np.asarray(da.values, dtype=float)
    return values.reshape(-1, *values.shape[2:])


def _element_labels(site: str, shape: tuple[int, ...]) -> list[str]:
    if not shape:
        return [site]
    return [f"{site}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def _log_distance(ratio: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(np.log(ratio))


def reference_errors(idata: az.InferenceData, reference: Reference) -> pd.DataFrame:
    """Per scalar element: standardised mean error, sd ratio and IQR ratio against ``reference``.

    Args:
        idata: a guide's draws (``posterior`` group).
        reference: the trusted marginals.

    Returns:
        One row per element of every reference site the guide also draws, with columns
        ``parameter, mean_error`` (``|mean - mean_ref| / sd_ref``), ``sd_ratio`` (``sd / sd_ref``)
        and ``iqr_ratio`` (NaN where the reference has no quartiles).

    Example:
        >>> import arviz as az
        >>> idata = az.from_dict(posterior={"mu": np.random.default_rng(1).normal(size=(1, 2000))})
        >>> ref = Reference.from_summary({"mu": {"mean": 0.0, "sd": 2.0}})
        >>> round(float(reference_errors(idata, ref).loc[0, "sd_ratio"]), 1)
        0.5
    """
    rows = []
    post = idata.posterior
    for site, ref in reference.summary.items():
        if site not in post.data_vars:
            continue
        draws = _pooled(post[site])
        shape = draws.shape[1:]
        mean_ref = np.broadcast_to(ref["mean"], shape)
        sd_ref = np.broadcast_to(ref["sd"], shape)
        mean_err = np.abs(draws.mean(0) - mean_ref) / sd_ref
        sd_ratio = draws.std(0, ddof=1) / sd_ref
        if "q25" in ref and "q75" in ref:
            iqr_ref = np.broadcast_to(ref["q75"] - ref["q25"], shape)
            q25, q75 = np.quantile(draws, [0.25, 0.75], axis=0)
            iqr_ratio = (q75 - q25) / iqr_ref
        else:
            iqr_ratio = np.full(shape, np.nan)
        for i, label in enumerate(_element_labels(site, shape)):
            rows.append(
                {
                    "parameter": label,
                    "mean_error": float(np.ravel(mean_err)[i]),
                    "sd_ratio": float(np.ravel(sd_ratio)[i]),
                    "iqr_ratio": float(np.ravel(iqr_ratio)[i]),
                }
            )
    return pd.DataFrame(rows, columns=["parameter", "mean_error", "sd_ratio", "iqr_ratio"])


def _worst_ratio(ratios: pd.Series) -> float:
    values = ratios.to_numpy(dtype=float)
    dist = _log_distance(values)
    if not np.isfinite(dist).any():
        return math.nan
    return float(values[np.nanargmax(dist)])


def _aggregate(errors: pd.DataFrame) -> dict[str, float]:
    if errors.empty:
        return dict.fromkeys(_ERROR_COLUMNS[:-1], math.nan)
    return {
        "mean_error_max": float(errors["mean_error"].max()),
        "mean_error_median": float(errors["mean_error"].median()),
        "sd_ratio_worst": _worst_ratio(errors["sd_ratio"]),
        "sd_ratio_median": float(errors["sd_ratio"].median()),
        "iqr_ratio_worst": _worst_ratio(errors["iqr_ratio"]),
        "iqr_ratio_median": float(errors["iqr_ratio"].median()),
    }


def latent_supports(model: Callable, *args: Any, **model_kwargs: Any) -> dict[str, Any]:
    """Support constraint of every latent (unobserved) sample site, from one model trace."""
    trace = poutine.trace(model).get_trace(*args, **model_kwargs)
    return {name: site["fn"].support for name, site in trace.nodes.items() if is_latent(site)}


def _unconstrain(x: np.ndarray, support: Any) -> np.ndarray:
    value = torch.as_tensor(x, dtype=torch.float64)
    with torch.no_grad():
        u = biject_to(support).inv(value)
    return u.reshape(len(x), -1).numpy()


def wasserstein_unconstrained(
    idata: az.InferenceData, reference: Reference, supports: Mapping[str, Any]
) -> float:
    """Mean over unconstrained coordinates of the 1-D 1-Wasserstein distance to the reference draws.

    Both sets of draws are mapped to the unconstrained space with ``biject_to(support).inv`` (as the
    Pathfinder paper measures); NaN when the reference has no draws or no site in common.

    Example:
        >>> import arviz as az
        >>> from torch.distributions import constraints
        >>> rng = np.random.default_rng(0)
        >>> idata = az.from_dict(posterior={"s": np.exp(rng.normal(size=(1, 4000)))})
        >>> ref = Reference.from_draws({"s": np.exp(rng.normal(1.0, 1.0, size=4000))})
        >>> round(wasserstein_unconstrained(idata, ref, {"s": constraints.positive}), 1)
        1.0
    """
    from scipy.stats import wasserstein_distance

    if reference.draws is None:
        return math.nan
    distances = []
    for site, ref_draws in reference.draws.items():
        if site not in idata.posterior.data_vars or site not in supports:
            continue
        ug = _unconstrain(_pooled(idata.posterior[site]), supports[site])
        ur = _unconstrain(np.asarray(ref_draws, dtype=float), supports[site])
        distances += [wasserstein_distance(ug[:, j], ur[:, j]) for j in range(ug.shape[1])]
    return float(np.mean(distances)) if distances else math.nan
