r"""ArviZ bridge: ``InferenceData`` from any guide, PSIS importance resampling, guides as chains.

``az.from_pyro`` converts MCMC only; :func:`to_inference_data` converts draws from *any* guide
(flows and baselines alike) with the same groups, so ArviZ compares them like for like:

- ``posterior``: constrained draws :math:`z_s \sim q` of every latent and deterministic site, dims
  ``(chain, draw, *plates, *event dims)`` named after the model's ``pyro.plate``\ s;
- ``sample_stats``: ``log_p`` :math:`= \log p(x, z_s)`, ``log_q`` :math:`= \log q(z_s)`,
  ``log_weight`` :math:`= \log p(x, z_s) - \log q(z_s)`;
- ``log_likelihood``: pointwise :math:`\log p(y_i \mid z_s)` per observed site (``az.loo``,
  ``az.waic``, ``az.compare``);
- ``posterior_predictive``: one replicate :math:`\tilde y_s \sim p(y \mid z_s)` per draw;
- ``observed_data``; attrs with the guide, its settings (JSON) and library versions.

One guide's draws are iid, so they form one chain. :func:`stack_chains` stacks the
draws of several fitted guides as chains (restarts: ``az.rhat`` / ``az.ess`` then flag an
optimisation that lands in different places).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import arviz as az
import numpy as np
import pyro
import torch
import xarray as xr

from pyro_nf._util import check_positive_int
from pyro_nf.evaluation import draws as _traces
from pyro_nf.evaluation.batches import iter_batches
from pyro_nf.evaluation.diagnostics import KHAT_USABLE, importance_ess, khat_band, psis

__all__ = ["importance_resample", "to_inference_data", "stack_chains"]

_SAMPLE_GROUPS = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive")


def _stack(chains: list[_traces.Batch]) -> _traces.Batch:
    """Stack per-chain results (each with draws first) into ``(chain, draw, ...)`` arrays."""

    def stack(key: str) -> dict[str, np.ndarray]:
        return {k: np.stack([getattr(c, key)[k] for c in chains]) for k in getattr(chains[0], key)}

    return _traces.Batch(
        np.stack([c.log_p for c in chains]),
        np.stack([c.log_q for c in chains]),
        stack("values"),
        stack("log_likelihood"),
        stack("predictive"),
    )


def _posterior(draws: _traces.Batch, layout: _traces.ModelLayout) -> xr.Dataset:
    return az.dict_to_dataset(draws.values, library=pyro, coords=layout.coords(), dims=layout.dims())


def _sample_stats(draws: _traces.Batch) -> xr.Dataset:
    data = {"log_p": draws.log_p, "log_q": draws.log_q, "log_weight": draws.log_p - draws.log_q}
    return az.dict_to_dataset(data, library=pyro)


def _log_likelihood(draws: _traces.Batch, layout: _traces.ModelLayout) -> xr.Dataset:
    dims = {name: list(lay.batch_dims) for name, lay in layout.observed.items()}
    return az.dict_to_dataset(draws.log_likelihood, library=pyro, coords=layout.coords(), dims=dims)


def _posterior_predictive(draws: _traces.Batch, layout: _traces.ModelLayout) -> xr.Dataset:
    return az.dict_to_dataset(draws.predictive, library=pyro, coords=layout.coords(), dims=layout.dims())


def _observed_data(layout: _traces.ModelLayout) -> xr.Dataset:
    return az.dict_to_dataset(
        layout.observed_values, library=pyro, coords=layout.coords(), dims=layout.dims(), default_dims=[]
    )


def _plain(value: Any) -> str | int | float:
    """An attr netCDF accepts: str, int or float (anything else becomes its string)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    return str(value)


def _attrs(
    guide: Callable, layout: _traces.ModelLayout, fit: Any | None, num_samples: int
) -> dict[str, str | int | float]:
    attrs: dict[str, Any] = {
        "guide": _traces.guide_name(guide),
        "guide_config": _traces.guide_config_json(guide),
        "num_samples": num_samples,
        "enumerated_sites": json.dumps(list(layout.enumerated)),
        "pyro_nf_version": importlib.metadata.version("pyro-nf"),
        "pyro_version": pyro.__version__,
        "torch_version": torch.__version__,
    }
    if fit is not None:
        losses = list(fit.losses)
        attrs.update(
            final_elbo=-float(losses[-1]) if losses else math.nan,
            num_steps=fit.num_steps,
            stop_reason=fit.stop_reason,
            wall_seconds=fit.wall_seconds,
            num_recoveries=fit.num_recoveries,
        )
        if getattr(fit, "final_lr", None) is not None:
            attrs["final_lr"] = fit.final_lr
        if getattr(fit, "num_clipped", None) is not None:
            attrs["num_clipped"] = fit.num_clipped
    return {k: _plain(v) for k, v in attrs.items()}


def _assemble(
    draws: _traces.Batch, layout: _traces.ModelLayout, attrs: dict[str, str | int | float]
) -> az.InferenceData:
    groups = {
        "posterior": _posterior(draws, layout),
        "sample_stats": _sample_stats(draws),
        "log_likelihood": _log_likelihood(draws, layout),
        "posterior_predictive": _posterior_predictive(draws, layout),
        "observed_data": _observed_data(layout),
    }
    for ds in groups.values():
        ds.attrs.update(attrs)
    return az.InferenceData(**{k: v for k, v in groups.items() if v.data_vars})


def _draw(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, num_samples: int, batch_size: int
) -> tuple[_traces.ModelLayout, _traces.Batch]:
    layout = _traces.inspect_model(model, guide, args, kwargs)
    batches = list(iter_batches(model, guide, args, kwargs, layout, num_samples, batch_size, full=True))
    return layout, _traces.concat(batches)


def to_inference_data(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    fit: Any | None = None,
    batch_size: int = 1000,
    **model_kwargs: Any,
) -> az.InferenceData:
    r"""Draw from a fitted guide and return an ArviZ ``InferenceData`` (one chain).

    Each draw :math:`z_s \sim q` is scored under the model: ``sample_stats.log_weight`` holds
    :math:`\log p(x, z_s) - \log q(z_s)` for :func:`importance_resample`. With enumerated discrete
    sites (``config_enumerate``, hidden from the guide), ``log_p`` sums them out as
    :class:`~pyro.infer.TraceEnum_ELBO` does, their draws come from
    :func:`~pyro.infer.infer_discrete`, and the pointwise log-likelihood is marginal over them
    (exact when each discrete site feeds one observed site in the same plates, as in mixtures).

    Args:
        model: The Pyro model. Its plates must be vectorised (as for ``vectorize_particles``).
        guide: Any guide; a never-called guide is set up first.
        *args: The model's positional arguments.
        num_samples: Number of draws.
        fit: Optional result of :func:`pyro_nf.fit` (any object with ``losses``, ``num_steps``,
            ``stop_reason``, ``wall_seconds``, ``num_recoveries``): recorded in attrs
            (``final_elbo`` :math:`= -` last loss, ``num_steps``, ...).
        batch_size: Draws computed at once (bounds memory).
        **model_kwargs: The model's keyword arguments.

    Returns:
        ``InferenceData`` with groups ``posterior``, ``sample_stats``, ``log_likelihood``,
        ``posterior_predictive``, ``observed_data`` (groups without variables are left out); all
        attrs are plain str/int/float, so it round-trips through ``to_netcdf``/``from_netcdf``.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("obs", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> idata = to_inference_data(model, AutoNormal(model), torch.zeros(3), num_samples=50)
        >>> dict(idata.log_likelihood.sizes)
        {'chain': 1, 'draw': 50, 'obs': 3}
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("batch_size", batch_size)
    if fit is not None and not all(
        hasattr(fit, a) for a in ("losses", "num_steps", "stop_reason", "wall_seconds", "num_recoveries")
    ):
        raise TypeError(
            f"fit must be None or the result of pyro_nf.fit (a FitResult), got {type(fit).__name__}"
        )
    layout, draws = _draw(model, guide, args, model_kwargs, num_samples, batch_size)
    return _assemble(_stack([draws]), layout, _attrs(guide, layout, fit, num_samples))


def _systematic_resample(log_weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` systematic-resampling draws for normalised ``log_weights``."""
    cdf = np.cumsum(np.exp(log_weights - log_weights.max()))
    cdf /= cdf[-1]
    positions = (rng.uniform() + np.arange(n)) / n
    return np.minimum(np.searchsorted(cdf, positions), len(cdf) - 1)


def _resample_dataset(ds: xr.Dataset, index: np.ndarray, attrs: dict) -> xr.Dataset:
    data_vars = {}
    for name, da in ds.data_vars.items():
        if da.dims[:2] != ("chain", "draw"):
            raise ValueError(f"variable {name!r} has dims {da.dims}; expected (chain, draw, ...)")
        flat = da.values.reshape((-1,) + da.shape[2:])
        data_vars[name] = (da.dims, flat[index][None])
    coords = {k: v for k, v in ds.coords.items() if k not in ("chain", "draw")}
    coords.update(chain=np.arange(1), draw=np.arange(len(index)))
    return xr.Dataset(data_vars, coords=coords, attrs={**ds.attrs, **attrs})


def importance_resample(
    idata: az.InferenceData,
    *,
    on_bad_khat: Literal["raise", "warn"] = "raise",
    num_draws: int | None = None,
    seed: int | None = None,
) -> az.InferenceData:
    r"""PSIS-weighted resampling of guide draws towards the posterior.

    With :math:`\tilde w_s` the Pareto-smoothed normalised weights of
    ``sample_stats.log_weight`` (ArviZ's ``psislw``), draws are resampled by systematic
    resampling so that :math:`\frac1M \sum_m f(z_{s_m}) \approx \sum_s \tilde w_s f(z_s)`, the PSIS
    estimate of :math:`E_p[f]`. Yao et al. (2018): this corrects the guide when
    :math:`\hat k \le 0.7`; above that the weights' variance is too large to trust.

    Args:
        idata: From :func:`to_inference_data` (needs ``sample_stats.log_weight``).
        on_bad_khat: ``"raise"`` (``ValueError``) or ``"warn"`` (``UserWarning``) when
            :math:`\hat k > 0.7`.
        num_draws: Number of resampled draws (default: as many as in ``idata``).
        seed: Seed of the resampling; by default drawn from NumPy's global generator (which
            ``pyro.set_rng_seed`` seeds).

    Returns:
        A new ``InferenceData`` (one chain) whose ``posterior``, ``sample_stats``,
        ``log_likelihood`` and ``posterior_predictive`` are resampled together; other groups are
        kept. Attrs gain ``importance_resampled``, ``resample_khat`` and ``resample_ess``.

    Raises:
        ValueError: If ``idata`` has no ``sample_stats.log_weight``, if ``on_bad_khat`` is not
            ``"raise"``/``"warn"``, or (with ``"raise"``) if :math:`\hat k > 0.7`.

    Example:
        >>> import warnings, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("mu", dist.Normal(0.0, 1.0))
        >>> idata = to_inference_data(model, AutoNormal(model), num_samples=200)
        >>> with warnings.catch_warnings():  # the untrained guide is far too narrow: k-hat > 0.7
        ...     warnings.simplefilter("ignore")
        ...     corrected = importance_resample(idata, on_bad_khat="warn")
        >>> dict(corrected.posterior.sizes)
        {'chain': 1, 'draw': 200}
    """
    if not isinstance(idata, az.InferenceData):
        raise TypeError(
            f"importance_resample needs an InferenceData from pyro_nf.to_inference_data, "
            f"got {type(idata).__name__}"
        )
    if num_draws is not None:
        num_draws = check_positive_int("num_draws", num_draws)
    if on_bad_khat not in ("raise", "warn"):
        raise ValueError(f"on_bad_khat must be 'raise' or 'warn', got {on_bad_khat!r}")
    if "sample_stats" not in idata.groups() or "log_weight" not in idata.sample_stats:
        raise ValueError("idata has no sample_stats.log_weight; build it with pyro_nf.to_inference_data")
    log_weight = idata.sample_stats["log_weight"].values.reshape(-1)
    smoothed, khat = psis(np.where(np.isnan(log_weight), -np.inf, log_weight))
    if khat_band(khat) in ("unreliable", "unknown"):
        message = (
            f"Pareto k-hat = {khat:.2f} > {KHAT_USABLE}: the guide misses too much posterior "
            "mass for importance resampling to correct it; fit a richer guide"
        )
        if on_bad_khat == "raise":
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    n = smoothed.size if num_draws is None else num_draws
    index = _systematic_resample(smoothed, n, np.random.default_rng(seed))
    ess = importance_ess(smoothed)
    attrs = {"importance_resampled": "psis-systematic", "resample_khat": float(khat), "resample_ess": ess}
    groups = {}
    for name in idata.groups():
        ds = idata[name]
        groups[name] = _resample_dataset(ds, index, attrs) if name in _SAMPLE_GROUPS else ds
    return az.InferenceData(**groups)


def stack_chains(idatas: Sequence[az.InferenceData], attrs: dict[str, Any] | None = None) -> az.InferenceData:
    r"""Stack one-chain ``InferenceData`` objects of one model as chains ``0..K-1``.

    Used for restarts (one guide type fitted from :math:`K` seeds,
    :func:`pyro_nf.comparison.to_inference_data_restarts`): ``az.rhat`` across the chains then
    flags optimisations that land in different places. Groups present in the first object are
    stacked (``observed_data`` is taken from the first); ``attrs`` are added to every group.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("mu", dist.Normal(0.0, 1.0))
        >>> one = to_inference_data(model, AutoNormal(model), num_samples=10)
        >>> dict(stack_chains([one, one]).posterior.sizes)
        {'chain': 2, 'draw': 10}
    """
    if not idatas:
        raise ValueError("idatas must hold at least one InferenceData")
    groups = {}
    for name in idatas[0].groups():
        first = idatas[0][name]
        if name not in _SAMPLE_GROUPS:
            groups[name] = first
            continue
        ds = xr.concat([idata[name] for idata in idatas], dim="chain")
        groups[name] = ds.assign_coords(chain=np.arange(len(idatas)))
    for ds in groups.values():
        ds.attrs.update(attrs or {})
    return az.InferenceData(**groups)
