r"""Shared plumbing for the built-in examples: the :class:`Example` record and the JSON readers.

The reference posteriors ship as JSON files in ``pyro_nf/examples/data/`` (see ``REFERENCES.md``
there). This module reads them once (:func:`load_json` is cached) and turns their parts into what an
:class:`Example` holds: summaries as numpy arrays, thinned reference draws grouped by site, tensors
in torch's default dtype (built fresh on every call, so callers may modify them).

It also holds the one numerical routine the exact examples share, :func:`mixture_quantiles`:
quantiles of a Gaussian mixture :math:`F(q) = \mathbb{E}_{u \sim N(0,1)}[\Phi(g(q, u))]`, by
quadrature in ``float64`` and bisection (deterministic, no sampling).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr, ndtri

__all__ = [
    "QUANTILE_LEVELS",
    "Example",
    "describe",
    "draws_from_json",
    "event_to_plate",
    "load_json",
    "mixture_quantiles",
    "normal_quantiles",
    "summaries_from_json",
    "tensor",
]

#: Quantile keys used in the reference files, with their probability levels.
QUANTILE_LEVELS: dict[str, float] = {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}

_SUMMARY_KEYS: tuple[str, ...] = ("mean", "sd", *QUANTILE_LEVELS)


@dataclass(frozen=True, eq=False)
class Example:
    r"""A built-in model with its data and a trusted reference posterior.

    Call the model as ``example.model(**example.data)``; pass the observed keyword as ``None`` to
    draw from the prior predictive. Instances compare and hash by identity (their fields hold
    tensors and arrays, which have no single truth value).

    Attributes:
        name: Registry name, as accepted by :func:`pyro_nf.examples.get_example`.
        model: The Pyro model (a plain function).
        data: Keyword arguments of ``model``: observed tensors (floating point, torch's default
            dtype when the example was built), index tensors (``torch.long``) and integer sizes.
        description: Where the model and reference come from, and why it is hard or easy for a
            mean-field guide.
        reference: ``{site name: {"mean", "sd"[, "q05", "q25", "q50", "q75", "q95"]}}`` with numpy
            ``float64`` arrays shaped like the site (``()`` for scalar sites). Keys are the model's
            latent sample sites, plus deterministic sites where the source has a reference for them.
        reference_draws: Constrained reference draws ``{site: array (n_draws, *site_shape)}``, or
            ``None`` where the source has summaries only.
        exact_sampler: ``exact_sampler(num_samples, seed) -> {site: tensor (num_samples, *shape)}``,
            independent exact posterior draws, or ``None``.
        log_density: Exact *normalised* log posterior density,
            ``log_density({site: value}) -> tensor`` (values may carry batch dims on the left), or
            ``None``.
    """

    name: str
    model: Callable[..., Any]
    data: dict[str, torch.Tensor | int]
    description: str
    reference: dict[str, dict[str, np.ndarray]]
    reference_draws: dict[str, np.ndarray] | None = None
    exact_sampler: Callable[[int, int], dict[str, torch.Tensor]] | None = None
    log_density: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None = None


@functools.cache
def load_json(filename: str) -> Mapping[str, Any]:
    """Parse ``pyro_nf/examples/data/<filename>`` once per process.

    The result is shared between callers: read it, never modify it.

    Args:
        filename: File name inside the package's ``data`` folder, e.g. ``"banana.json"``.

    Returns:
        The parsed JSON document.
    """
    resource = importlib.resources.files("pyro_nf.examples").joinpath("data", filename)
    return json.loads(resource.read_text(encoding="utf-8"))


def tensor(values: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A new tensor from JSON values, in ``dtype`` (default: torch's default dtype *now*)."""
    return torch.tensor(values, dtype=torch.get_default_dtype() if dtype is None else dtype)


def describe(doc: Mapping[str, Any]) -> str:
    """One paragraph: why the posterior was chosen, then its source (repository and file)."""
    source = doc["source"]
    where = source.get("posterior") or source.get("model") or ""
    commit = source.get("commit", "")[:12]
    return f"{doc['why_chosen']} Source: {source['repo']} @ {commit}, {where}."


def summaries_from_json(
    entries: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]
) -> dict[str, dict[str, np.ndarray]]:
    """Per-site ``mean``/``sd``/quantile arrays from a JSON ``reference`` block.

    Args:
        entries: The JSON block, ``{json key: {"mean": ..., "sd": ..., ...}}``.
        names: ``{site name: json key}``; the output is keyed by site name in this order.

    Returns:
        ``{site: {stat: float64 array}}`` holding those of ``mean, sd, q05, q25, q50, q75, q95``
        that the JSON has (MCSE, ESS and labels are dropped).
    """
    return {
        site: {k: np.asarray(entries[key][k], dtype=np.float64) for k in _SUMMARY_KEYS if k in entries[key]}
        for site, key in names.items()
    }


def draws_from_json(thinned: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Group the columns of ``reference_draws_thinned`` into arrays per site.

    Columns are named as in Stan: ``"mu"`` (scalar) or ``"theta[1]"`` ... ``"theta[8]"`` (1-based).

    Args:
        thinned: The JSON block with ``columns`` and ``draws`` (rows are draws).

    Returns:
        ``{site: float64 array (n_draws,) or (n_draws, K)}`` in order of first appearance.

    Raises:
        ValueError: If a vector site's indices are not exactly ``1..K``.
    """
    matrix = np.asarray(thinned["draws"], dtype=np.float64)
    columns: dict[str, list[tuple[int, int]]] = {}
    for col, label in enumerate(thinned["columns"]):
        base, bracket, rest = label.partition("[")
        index = int(rest.rstrip("]")) if bracket else 0
        columns.setdefault(base, []).append((index, col))
    out: dict[str, np.ndarray] = {}
    for base, pairs in columns.items():
        pairs.sort()
        indices = [i for i, _ in pairs]
        if indices == [0]:
            out[base] = matrix[:, pairs[0][1]].copy()
        elif indices == list(range(1, len(pairs) + 1)):
            out[base] = matrix[:, [c for _, c in pairs]]
        else:
            raise ValueError(f"columns of {base!r} are not indexed 1..K: {indices}")
    return out


def normal_quantiles(loc: float, scale: float) -> dict[str, float]:
    r"""Quantiles :math:`\mu + \sigma\,\Phi^{-1}(p)` of :math:`N(\mu, \sigma)` at the reference
    levels."""
    values = loc + scale * ndtri(np.asarray(list(QUANTILE_LEVELS.values())))
    return dict(zip(QUANTILE_LEVELS, values.tolist(), strict=True))


def mixture_quantiles(
    argument: Callable[[np.ndarray, np.ndarray], np.ndarray],
    levels: Sequence[float] = tuple(QUANTILE_LEVELS.values()),
    step: float = 0.02,
    half_width: float = 12.0,
) -> list[float]:
    r"""Quantiles of :math:`F(q) = \mathbb{E}_{u \sim N(0,1)}[\Phi(\mathrm{argument}(q, u))]`.

    The expectation is the trapezoid rule on a uniform grid over :math:`|u| \le 12` in ``float64``:
    for smooth integrands that decay like :math:`\varphi(u)` it converges exponentially in
    ``1/step`` (Trefethen & Weideman 2014), unlike Gauss--Hermite, which is poor when the integrand
    has a sharp transition in :math:`u` (it misplaces the banana's 95% quantile by 0.25 with 101
    nodes). All levels are then solved together by bracketing and 80 bisection steps:
    deterministic, no sampling, accurate to about 1e-12. (``scipy.special.ndtr`` rather than torch:
    small torch ops pay thread-pool overhead, which made this 100x slower on a busy machine.)

    Args:
        argument: ``(q, u) -> z`` with :math:`P(X \le q \mid u) = \Phi(z)`, increasing in q;
            called with ``q`` of shape ``(L, 1)`` and ``u`` of shape ``(n,)``, so it must broadcast.
        levels: Probability levels in (0, 1).
        step: Grid spacing in :math:`u`.
        half_width: The grid covers ``[-half_width, half_width]``.

    Returns:
        The quantiles, in the order of ``levels``.
    """
    nodes = np.linspace(-half_width, half_width, int(round(2 * half_width / step)) + 1)
    weights = np.exp(-0.5 * nodes**2)
    weights /= weights.sum()
    probs = np.asarray(levels, dtype=np.float64)

    def cdf(q: np.ndarray) -> np.ndarray:
        return ndtr(np.asarray(argument(q[:, None], nodes), dtype=np.float64)) @ weights

    lo, hi = -np.ones_like(probs), np.ones_like(probs)
    while np.any(below := cdf(lo) > probs):
        lo = np.where(below, 2.0 * lo, lo)
    while np.any(above := cdf(hi) < probs):
        hi = np.where(above, 2.0 * hi, hi)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        low = cdf(mid) < probs
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    return (0.5 * (lo + hi)).tolist()


def event_to_plate(value: torch.Tensor, site: str) -> torch.Tensor:
    r"""A vector site's value with its event dim placed where the model's plate dim ``-1`` is.

    A latent vector site declared outside the model's plate (with ``.to_event(1)``) has shape
    ``(*batch, n)``, where under outer plates (e.g. a vectorised particle plate at dim ``-2``) the
    batch shape ends in a singleton at dim ``-1``: the place of the model's own plate. Dropping
    that singleton makes the ``n`` values line up with a plate of size ``n`` at dim ``-1``:
    ``(n,) -> (n,)``, ``(P, 1, n) -> (P, n)``, ``(P, 1, 1, n) -> (P, 1, n)``.

    >>> event_to_plate(torch.zeros(8, 1, 5), "f").shape
    torch.Size([8, 5])

    Args:
        value: The site's value, shape ``(n,)`` or ``(*batch, 1, n)``.
        site: The site's name, for the error message.

    Returns:
        The value without the singleton dim ``-2`` (a view).

    Raises:
        ValueError: If ``value`` has batch dims but dim ``-2`` is not a singleton (the model was
            run under a plate at dim ``-1``, which the model's own plate needs).
    """
    if value.dim() == 1:
        return value
    if value.shape[-2] != 1:
        raise ValueError(
            f"site {site!r}: value of shape {tuple(value.shape)}, expected (n,) or (*batch, 1, n); "
            "an outer plate must sit left of the model's plate at dim -1 (max_plate_nesting >= 1)"
        )
    return value.squeeze(-2)
