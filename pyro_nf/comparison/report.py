"""The report folder of a comparison: table, draws, plots and a markdown page that interprets them.

:func:`write_report` is what :meth:`pyro_nf.Comparison.save` runs; :func:`interpret` turns
the table's numbers into a few plain sentences ("mean-field's k-hat 0.93 > 0.7: ...").

Example:
    >>> import pandas as pd
    >>> table = pd.DataFrame({"khat": [0.93, 0.45], "iwelbo": [-40.1, -39.2],
    ...                       "ms_per_step": [1.0, 3.0], "num_params": [20, 900]},
    ...                      index=pd.Index(["meanfield", "iaf"], name="guide"))
    >>> interpret(table)[0][:40]
    "meanfield's k-hat 0.93 > 0.7: its import"
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pyro_nf.comparison import plots
from pyro_nf.comparison.folder import finish_folder, start_folder
from pyro_nf.evaluation.diagnostics import khat_band

if TYPE_CHECKING:
    from pyro_nf.comparison.result import Comparison

__all__ = ["BASELINES", "interpret", "markdown_table", "write_report"]

#: Guides that are not flows: the report measures the flows against the first of these it finds.
BASELINES = ("meanfield", "diagonal", "fullrank", "lowrank")

_COLUMN_TITLES = {
    "elbo": "ELBO",
    "iwelbo": "IW-ELBO",
    "khat": "k-hat",
    "verdict": "verdict",
    "ess": "ESS",
    "fit_seconds": "fit s",
    "ms_per_step": "ms/step",
    "num_params": "params",
    "num_steps": "steps",
    "stop_reason": "stop",
    "mean_error_max": "mean err max",
    "mean_error_median": "mean err med",
    "sd_ratio_worst": "sd ratio worst",
    "sd_ratio_median": "sd ratio med",
    "iqr_ratio_worst": "IQR ratio worst",
    "iqr_ratio_median": "IQR ratio med",
    "w1_unconstrained": "W1 (unc.)",
}


def _fmt(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return ""
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.2e}"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.1f}"
    return str(value).replace("|", "\\|")


def markdown_table(table: pd.DataFrame) -> str:
    """The table as GitHub markdown, numbers to 3 significant digits, empty cells for NaN."""
    cols = list(table.columns)
    header = [table.index.name or ""] + [_COLUMN_TITLES.get(c, c) for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [_fmt(row[c]) for c in cols]) + " |")
    return "\n".join(lines)


def _pct(ratio: float) -> str:
    return f"{abs(ratio - 1) * 100:.0f}%"


def interpret(table: pd.DataFrame, errors: pd.DataFrame | None = None) -> list[str]:
    """A few sentences on what the comparison table says.

    Args:
        table: comparison table (index: guide; needs ``khat``; uses ``iwelbo``, ``ms_per_step``,
            ``num_params``, ``sd_ratio_*`` and ``w1_unconstrained`` when present).
        errors: the long per-parameter table of the comparison (for the hardest parameter).

    Returns:
        Between one and six sentences.
    """
    verdicts = table["verdict"] if "verdict" in table else pd.Series("", index=table.index)
    diverged = [g for g in table.index if verdicts[g] == "diverged"]
    guides = [g for g in table.index if g not in diverged]
    base = next((g for g in BASELINES if g in guides), guides[0])
    others = [g for g in guides if g != base and g not in BASELINES] or [g for g in guides if g != base]
    k = table["khat"].astype(float)
    out = []
    kb = k[base]
    band = khat_band(float(kb))
    if band in ("unreliable", "unknown"):
        out.append(
            f"{base}'s k-hat {kb:.2f} > 0.7: its importance weights are heavy-tailed, "
            "so its draws are unreliable."
        )
    elif band == "usable":
        out.append(
            f"{base}'s k-hat {kb:.2f} is between 0.5 and 0.7: usable, but importance "
            "resampling or a richer guide would help."
        )
    else:
        out.append(f"{base}'s k-hat {kb:.2f} < 0.5: {base} already fits this posterior well.")
    if diverged:
        out.append(f"Diverged (the divergence guard gave up; no draws, not plotted): {', '.join(diverged)}.")
    if not others:
        return out
    best = min(
        others,
        key=lambda g: (
            k[g] if np.isfinite(k[g]) else np.inf,
            -table.get("iwelbo", pd.Series(0.0, index=guides))[g],
        ),
    )
    verb = "reduces it to" if k[best] < kb else "does no better, at"
    sentence = f"The best alternative, {best}, {verb} {k[best]:.2f}"
    if "iwelbo" in table:
        gain = float(table.loc[best, "iwelbo"] - table.loc[base, "iwelbo"])
        sign = "+" if gain >= 0 else "-"
        sentence += f" ({sign}{abs(gain):.2f} nats of importance-weighted ELBO)"
    out.append(sentence + ".")
    if errors is not None and not errors.empty:
        base_err = errors[errors["guide"] == base].set_index("parameter")["sd_ratio"]
        base_err = base_err[np.isfinite(base_err)]
        if not base_err.empty:
            worst = base_err.index[int(np.argmax(np.abs(np.log(base_err.to_numpy()))))]
            rb = float(base_err[worst])
            match = errors[(errors["guide"] == best) & (errors["parameter"] == worst)]["sd_ratio"]
            s = (
                f"The hardest marginal for {base} is {worst}: its sd is {rb:.2f}x the reference's "
                f"({_pct(rb)} off)"
            )
            if not match.empty:
                rg = float(match.iloc[0])
                s += f"; {best}'s is {rg:.2f}x ({_pct(rg)} off)"
            same = errors[errors["parameter"] == worst].set_index("guide")["sd_ratio"]
            same = same[np.isfinite(same)]
            closest = same.index[int(np.argmin(np.abs(np.log(same.to_numpy()))))]
            if closest not in (base, best):
                s += f"; closest is {closest}'s, {same[closest]:.2f}x ({_pct(same[closest])} off)"
            out.append(s + ".")
    if "w1_unconstrained" in table and table["w1_unconstrained"].notna().any():
        w = table["w1_unconstrained"].astype(float)
        closest = w.idxmin()
        out.append(
            f"Closest to the reference draws (1-Wasserstein, unconstrained scale): "
            f"{closest} ({w[closest]:.3g}; {base}: {w[base]:.3g})."
        )
    if "ms_per_step" in table and "num_params" in table:
        ms, npar = table["ms_per_step"].astype(float), table["num_params"]
        out.append(
            f"{best} costs {ms[best]:.2f} ms per step against {ms[base]:.2f} for {base} "
            f"({ms[best] / ms[base]:.1f}x) with {int(npar[best]):,} parameters against "
            f"{int(npar[base]):,}."
        )
    if kb > 0.5 and k[best] < min(kb, 0.7):
        kind = "a flow" if best not in BASELINES else "a richer guide"
        out.append(f"Verdict: {kind} is worth it for this model ({best}).")
    elif kb <= 0.5:
        out.append(f"Verdict: {base} is good enough for this model; a richer guide buys little.")
    else:
        out.append(
            "Verdict: no guide tried is reliable here (k-hat >= 0.7 for all); consider "
            "a reparametrisation, a longer fit or NUTS."
        )
    return out[:6]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def marginal_table(errors: pd.DataFrame, max_rows: int = 12) -> str:
    """Markdown table: one row per parameter (the first ``max_rows``), one column per guide, each cell
    ``sd ratio / IQR ratio`` to the reference (empty without a reference)."""
    if errors is None or errors.empty:
        return ""
    guides = list(dict.fromkeys(errors["guide"]))
    params = list(dict.fromkeys(errors["parameter"]))
    cells = errors.set_index(["parameter", "guide"])
    lines = ["| parameter | " + " | ".join(guides) + " |", "|---" * (len(guides) + 1) + "|"]
    for p in params[:max_rows]:
        row = []
        for g in guides:
            sd, iqr = cells.loc[(p, g), "sd_ratio"], cells.loc[(p, g), "iqr_ratio"]
            row.append(f"{sd:.2f} / {iqr:.2f}")
        lines.append(f"| {p} | " + " | ".join(row) + " |")
    if len(params) > max_rows:
        lines.append(f"\n({len(params) - max_rows} more parameters in errors.csv.)")
    return "\n".join(lines)


def write_report(comparison: Comparison, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``table.csv``, ``<guide>.nc`` per guide, ``elbo.png``, ``pair.png``, ``forest.png``,
    ``khat.png``, ``errors.csv`` (with a reference) and ``report.md`` into ``folder``.

    Args:
        comparison: the result of :func:`pyro_nf.compare`.
        folder: created if missing. An earlier pyro_nf report there is replaced (its files are
            removed first, so the folder never mixes two runs); any other non-empty folder is
            refused unless ``overwrite`` (see :mod:`pyro_nf.comparison.folder`).
        overwrite: write into a non-empty folder that is not a pyro_nf report.

    Returns:
        The path of ``report.md``.

    Raises:
        ValueError: ``folder`` cannot be used (see :func:`~pyro_nf.comparison.folder.check_folder`).
    """
    folder = start_folder(folder, overwrite=overwrite)
    written = ["table.csv", "report.md", "elbo.png", "khat.png", "pair.png", "forest.png"]
    comparison.table.to_csv(folder / "table.csv")
    if not comparison.errors.empty:
        comparison.errors.to_csv(folder / "errors.csv", index=False)
        written.append("errors.csv")
    for name, idata in comparison.idata.items():
        idata.to_netcdf(str(folder / f"{_safe_name(name)}.nc"))
        written.append(f"{_safe_name(name)}.nc")
    figures = {
        "elbo.png": ("ELBO traces", comparison.plot_elbo),
        "khat.png": ("Pareto k-hat", comparison.plot_khat),
        "pair.png": ("Draws over the reference", comparison.plot_pair),
        "forest.png": ("Marginals side by side", comparison.plot_forest),
    }
    for file, (_, make) in figures.items():
        plots.save_figure(make(), folder / file)

    ref = comparison.reference
    lines = [f"# Guide comparison: {comparison.model_name}", ""]
    lines += [" ".join(interpret(comparison.table, comparison.errors)), ""]
    lines += [markdown_table(comparison.table), ""]
    lines.append(
        "k-hat: Pareto shape of the importance weights p(x, z) / q(z) (< 0.5 good, < 0.7 "
        "usable, Yao et al. 2018). ELBO and IW-ELBO are estimated from fresh draws after "
        "fitting."
    )
    if ref is not None:
        lines.append(
            f"Reference: {ref.source}. Mean error: |mean - mean_ref| / sd_ref per "
            "coordinate (max and median); sd and IQR ratios: guide / reference (worst = "
            "furthest from 1, and median); W1: mean 1-Wasserstein distance per "
            "unconstrained coordinate"
            + ("." if ref.draws is not None else " (empty: the reference has no draws).")
        )
    lines.append("")
    marginals = marginal_table(comparison.errors)
    if marginals:
        lines += [
            "## Marginals: sd ratio / IQR ratio to the reference",
            "",
            "Each coordinate's spread, as the model draws it, against the reference's (1 is exact). The "
            "sample sd of a heavy-tailed coordinate is noise (the funnel's x have kurtosis ~10^4): read "
            "its IQR ratio.",
            "",
            marginals,
            "",
        ]
    for file, (title, _) in figures.items():
        lines += [f"## {title}", "", f"![{title}]({file})", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    finish_folder(folder, written, kind="compare")
    return path
