"""The :class:`Comparison` result of :func:`pyro_nf.compare`: table, draws, fits, plots, report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pyro_nf.comparison.reference import Reference

if TYPE_CHECKING:
    import arviz as az
    from matplotlib.figure import Figure

__all__ = ["Comparison"]


@dataclass
class Comparison:
    """Several guides fitted on one model, side by side (returned by :func:`compare`).

    Attributes:
        table: one row per guide (index ``guide``): ``elbo, iwelbo, khat, verdict, ess,
            fit_seconds, ms_per_step, num_params, num_steps, stop_reason`` and, with a reference,
            ``mean_error_max, mean_error_median, sd_ratio_worst, sd_ratio_median, iqr_ratio_worst,
            iqr_ratio_median, w1_unconstrained``.
        idata: guide name -> its ``InferenceData``.
        fits: guide name -> its ``FitResult`` (the fitted guide is ``fits[name].guide``).
        diagnostics: guide name -> the object returned by ``diagnose``.
        errors: long table ``guide, parameter, mean_error, sd_ratio, iqr_ratio`` (empty without a
            reference).
        reference: the :class:`Reference` used, or ``None``.
        model_name: a name for titles and the report.
    """

    table: pd.DataFrame
    idata: dict[str, az.InferenceData]
    fits: dict[str, Any]
    diagnostics: dict[str, Any]
    errors: pd.DataFrame
    reference: Reference | None = None
    model_name: str = "model"
    var_names: list[str] | None = field(default=None)

    @property
    def reference_draws(self) -> dict[str, np.ndarray] | None:
        """The reference's draws (for overlays), or ``None``."""
        return self.reference.draws if self.reference is not None else None

    def plot_elbo(self) -> Figure:
        """ELBO trace of every guide (see :func:`pyro_nf.comparison.plots.plot_elbo`)."""
        from pyro_nf.comparison import plots

        return plots.plot_elbo(self.fits)

    def plot_pair(self, var_names: Sequence[str] | None = None) -> Figure:
        """Each guide's draws over the reference's (see :func:`pyro_nf.comparison.plots.plot_pair`)."""
        from pyro_nf.comparison import plots

        return plots.plot_pair(self.idata, self.reference_draws, var_names or self.var_names)

    def plot_forest(self, var_names: Sequence[str] | None = None) -> Figure:
        """All guides in one forest plot (see :func:`pyro_nf.comparison.plots.plot_forest`)."""
        from pyro_nf.comparison import plots

        return plots.plot_forest(self.idata, self.reference_draws, var_names)

    def plot_khat(self) -> Figure:
        """Pareto k-hat per guide (see :func:`pyro_nf.comparison.plots.plot_khat`)."""
        from pyro_nf.comparison import plots

        return plots.plot_khat(self.table)

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``table.csv``, ``<guide>.nc``, four PNG plots and ``report.md`` into ``folder`` (an
        earlier report there is replaced; another non-empty folder needs ``overwrite=True``)."""
        from pyro_nf.comparison.report import write_report

        return write_report(self, folder, overwrite=overwrite)
