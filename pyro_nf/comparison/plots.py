"""Side-by-side plots of several guides: ELBO traces, pair overlays, forest plot, k-hat bars.

Every function returns a matplotlib ``Figure`` built from the pieces of a
:class:`pyro_nf.Comparison`; nothing is ever shown (our own figures are made without pyplot;
the forest plot is ArviZ's; the ``pyro-nf`` command selects the Agg backend). :func:`save_figure`
writes a figure at :data:`DPI` and closes it, so ``figsize=(w, h)`` inches becomes a
``(h * DPI, w * DPI)`` pixel PNG.

Example:
    >>> import arviz as az
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> idata = {g: az.from_dict(posterior={"mu": rng.normal(size=(1, 300)),
    ...                                     "tau": rng.gamma(2.0, size=(1, 300))})
    ...          for g in ("meanfield", "iaf")}
    >>> fig = plot_pair(idata, None)
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from pyro_nf.evaluation.diagnostics import KHAT_GOOD, KHAT_USABLE, khat_band

__all__ = [
    "DPI",
    "ELBO_FIGSIZE",
    "plot_elbo",
    "plot_forest",
    "plot_khat",
    "plot_pair",
    "pair_coordinates",
    "save_figure",
]

#: Resolution of every saved PNG.
DPI = 100
#: Size in inches of the ELBO-trace figure.
ELBO_FIGSIZE = (8.0, 4.5)
#: Size in inches of one pair-plot panel (the figure is ``pairs`` panels wide, ``guides`` high).
PAIR_PANEL = (3.2, 2.8)
_REF_COLOR = "0.6"
_MAX_POINTS = 1000


#: Bar colour of each k-hat band (:func:`pyro_nf.evaluation.diagnostics.khat_band`).
_BAND_COLORS = {"good": "tab:green", "usable": "tab:orange", "unreliable": "tab:red", "unknown": "0.6"}


def _color(i: int) -> Any:
    return colormaps["tab10"](i % 10)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at :data:`DPI` (exact inch size, no tight cropping) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)  # a no-op for our own figures; ArviZ's forest plot is made through pyplot
    return path


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Rolling median: robust to the rare huge losses of a heavy-tailed ELBO estimate."""
    if window <= 1 or len(y) < window:
        return y
    return np.median(np.lib.stride_tricks.sliding_window_view(y, window), axis=1)


def plot_elbo(fits: Mapping[str, Any]) -> Figure:
    """ELBO (minus the SVI loss, rolling median over ~2% of the steps) per step, one line per guide.

    Args:
        fits: guide name -> object with ``losses`` (a list of floats), e.g. a ``FitResult``.

    Returns:
        A figure of size :data:`ELBO_FIGSIZE`; the y range follows the converged part of the traces.
    """
    fig = Figure(figsize=ELBO_FIGSIZE)
    ax = fig.subplots()
    lows, highs = [], []
    for i, (name, res) in enumerate(fits.items()):
        elbo = -np.asarray(res.losses, dtype=float)
        elbo = elbo[np.isfinite(elbo)]
        if elbo.size == 0:
            continue
        window = max(1, elbo.size // 50)
        smooth = _smooth(elbo, window)
        steps = np.arange(smooth.size) + window
        ax.plot(steps, smooth, color=_color(i), label=name, lw=1.3)
        tail = smooth[smooth.size // 5 :] if smooth.size >= 5 else smooth
        lows.append(np.percentile(tail, 1))
        highs.append(np.percentile(tail, 100))
    if lows:
        lo, hi = min(lows), max(highs)
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("SVI step")
    ax.set_ylabel("ELBO (smoothed)")
    ax.set_title("ELBO traces")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def pair_coordinates(
    idata: Mapping[str, Any], var_names: Sequence[str] | None = None, max_coords: int = 3
) -> list[tuple[str, tuple[int, ...]]]:
    """Pick ``(site, index)`` coordinates for the pair plot: scalar sites first, then elements.

    ``var_names`` restricts the choice to those sites (in that order).
    """
    first = next(iter(idata.values())).posterior
    names = list(var_names) if var_names else list(first.data_vars)
    missing = [n for n in names if n not in first.data_vars]
    if missing:
        raise ValueError(f"no variable(s) {missing} in the posterior; have {list(first.data_vars)}")
    shapes = {n: tuple(first[n].shape[2:]) for n in names}
    ordered = (
        [n for n in names if not shapes[n]] + [n for n in names if shapes[n]] if not var_names else names
    )
    coords = [(n, idx) for n in ordered for idx in np.ndindex(*shapes[n])]
    return coords[:max_coords]


def _values(draws: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    return draws[(slice(None), *idx)]


def _label(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{','.join(map(str, idx))}]" if idx else name


def _thin(x: np.ndarray, n: int = _MAX_POINTS) -> np.ndarray:
    return x if len(x) <= n else x[np.linspace(0, len(x) - 1, n).astype(int)]


def plot_pair(
    idata: Mapping[str, Any],
    reference_draws: Mapping[str, np.ndarray] | None,
    var_names: Sequence[str] | None = None,
    max_coords: int = 3,
) -> Figure:
    """Scatter of each guide's draws (one row per guide) over the reference draws (grey).

    Columns are the pairs of up to ``max_coords`` coordinates (see :func:`pair_coordinates`); an
    axis whose values are all positive and span more than two decades is drawn on a log scale, so
    funnels stay visible. With one coordinate only, its histogram is drawn instead.

    Args:
        idata: guide name -> ``InferenceData``.
        reference_draws: site -> ``(n, *shape)`` constrained draws, or ``None``.
        var_names: sites to choose coordinates from.
        max_coords: at most this many coordinates (``max_coords`` choose 2 panels per row).

    Returns:
        A figure ``pairs * 3.2`` inches wide and ``guides * 2.8`` high.
    """
    coords = pair_coordinates(idata, var_names, max_coords)
    pairs = list(itertools.combinations(coords, 2)) or [(coords[0], coords[0])]
    nrows, ncols = len(idata), len(pairs)
    fig = Figure(figsize=(PAIR_PANEL[0] * ncols, PAIR_PANEL[1] * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)

    def draws_of(post: Any, name: str) -> np.ndarray:
        da = post[name].transpose("chain", "draw", ...)
        v = np.asarray(da.values, dtype=float)
        return v.reshape(-1, *v.shape[2:])

    guide_draws = {g: {n: draws_of(d.posterior, n) for n, _ in coords} for g, d in idata.items()}
    ref = {
        n: np.asarray(reference_draws[n], dtype=float)
        for n, _ in coords
        if reference_draws is not None and n in reference_draws
    }

    def log_axis(coord: tuple[str, tuple[int, ...]]) -> bool:
        vals = [_values(d[coord[0]], coord[1]) for d in guide_draws.values()]
        if coord[0] in ref:
            vals.append(_values(ref[coord[0]], coord[1]))
        allv = np.concatenate(vals)
        allv = allv[np.isfinite(allv)]
        return bool(allv.size and allv.min() > 0 and allv.max() / allv.min() > 100)

    logs = {c: log_axis(c) for c in coords}
    for r, (g, draws) in enumerate(guide_draws.items()):
        for c, (cx, cy) in enumerate(pairs):
            ax = axes[r, c]
            gx = _thin(_values(draws[cx[0]], cx[1]))
            if cx == cy:
                if cx[0] in ref:
                    ax.hist(
                        _values(ref[cx[0]], cx[1]),
                        bins=40,
                        density=True,
                        color=_REF_COLOR,
                        alpha=0.6,
                        label="reference",
                    )
                ax.hist(gx, bins=40, density=True, color=_color(r), alpha=0.6, label=g)
            else:
                gy = _thin(_values(draws[cy[0]], cy[1]))
                if cx[0] in ref and cy[0] in ref:
                    ax.scatter(
                        _thin(_values(ref[cx[0]], cx[1])),
                        _thin(_values(ref[cy[0]], cy[1])),
                        s=3,
                        color=_REF_COLOR,
                        alpha=0.5,
                        label="reference",
                        rasterized=True,
                    )
                ax.scatter(gx, gy, s=3, color=_color(r), alpha=0.5, label=g, rasterized=True)
                ax.set_ylabel(_label(*cy), fontsize="small")
                if logs[cy]:
                    ax.set_yscale("log")
            if logs[cx]:
                ax.set_xscale("log")
            ax.set_xlabel(_label(*cx), fontsize="small")
            ax.tick_params(labelsize="x-small")
            if c == 0:
                ax.legend(fontsize="x-small", loc="best", markerscale=3)
    fig.tight_layout()
    return fig


def _forest_vars(post: Any, var_names: Sequence[str] | None, max_elements: int) -> list[str]:
    if var_names:
        return list(var_names)
    chosen, total = [], 0
    for name in post.data_vars:
        size = int(np.prod(post[name].shape[2:], dtype=int))
        if chosen and total + size > max_elements:
            continue
        chosen.append(name)
        total += size
    return chosen


def plot_forest(
    idata: Mapping[str, Any],
    reference_draws: Mapping[str, np.ndarray] | None = None,
    var_names: Sequence[str] | None = None,
    max_elements: int = 30,
) -> Figure:
    """``az.plot_forest`` of every guide and the reference draws (model ``reference``) side by side.

    Args:
        idata: guide name -> ``InferenceData``.
        reference_draws: site -> ``(n, *shape)`` draws, or ``None``.
        var_names: sites to show; by default sites in order, up to ``max_elements`` coordinates.
        max_elements: cap on the coordinates shown by default (big models would be unreadable).

    Returns:
        The figure ArviZ drew on; its height grows with coordinates x models.
    """
    import arviz as az

    first = next(iter(idata.values())).posterior
    names = _forest_vars(first, var_names, max_elements)
    data, labels = [idata[g] for g in idata], list(idata)
    if reference_draws is not None and all(n in reference_draws for n in names):
        ref = {n: np.asarray(reference_draws[n])[None] for n in names}
        data.append(az.from_dict(posterior=ref))
        labels.append("reference")
    rows = sum(int(np.prod(first[n].shape[2:], dtype=int)) for n in names)
    figsize = (8.0, min(40.0, max(4.0, 1.5 + 0.13 * rows * len(data))))
    colors = [_color(i) for i in range(len(idata))] + ["0.35"] * (len(data) - len(idata))
    axes = az.plot_forest(
        data,
        model_names=labels,
        var_names=names,
        combined=True,
        figsize=figsize,
        hdi_prob=0.9,
        textsize=9,
        colors=colors,
    )
    fig = np.ravel(axes)[0].figure
    fig.set_size_inches(*figsize)
    fig.suptitle("90% intervals per guide")
    return fig


def plot_khat(table: pd.DataFrame) -> Figure:
    """Bar chart of Pareto k-hat per guide, with the 0.5 and 0.7 thresholds of Yao et al. (2018).

    Args:
        table: a comparison table (index: guide name; column ``khat``).

    Returns:
        A figure ``max(4, 1.2 * guides)`` inches wide and 3.5 high.
    """
    khat = table["khat"].astype(float)
    fig = Figure(figsize=(max(4.0, 1.2 * len(khat)), 3.5))
    ax = fig.subplots()
    colors = [_BAND_COLORS[khat_band(float(k))] for k in khat]
    heights = khat.fillna(0.0).clip(upper=3.0)
    ax.bar(range(len(khat)), heights, color=colors)
    for i, k in enumerate(khat):
        ax.text(i, float(heights.iloc[i]) + 0.02, f"{k:.2f}", ha="center", va="bottom", fontsize="small")
    ax.axhline(KHAT_GOOD, color="tab:orange", ls="--", lw=1)
    ax.axhline(KHAT_USABLE, color="tab:red", ls="--", lw=1)
    ax.set_xticks(range(len(khat)), [str(i) for i in khat.index])
    ax.set_ylabel("Pareto k-hat")
    ax.set_ylim(0, max(1.0, float(heights.max()) + 0.15))
    ax.set_title(f"PSIS k-hat (<= {KHAT_USABLE} usable, < {KHAT_GOOD} good)")
    fig.tight_layout()
    return fig
