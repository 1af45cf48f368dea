r"""Batches of guide draws for :mod:`~pyro_nf.evaluation.diagnostics` and
:mod:`~pyro_nf.evaluation.bridge`, vectorised where the model allows it.

:func:`iter_batches` scores ``batch_size`` draws at once under an outer particle plate
(:func:`~pyro_nf.evaluation.draws.draw_batch`). Models written for one draw (``X @ beta``,
``locs[z]``, ``pyro.deterministic`` without ``event_dim``, ``.mean()`` over a latent) may raise under
that plate or, worse, compute something else; so the first batch's first draw is scored again on its
own and compared. On a failure or a mismatch every draw is scored one at a time: slower, correct,
with one ``UserWarning`` that says how to make the model broadcast.

This module is private: its layout may change without notice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.distributions as dist

from pyro_nf._util import check_positive_int
from pyro_nf.evaluation.draws import Batch, ModelLayout, concat, draw_batch

__all__ = ["iter_batches"]


def iter_batches(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    layout: ModelLayout,
    num_samples: int,
    batch_size: int,
    *,
    full: bool,
) -> Iterator[Batch]:
    """Yield :func:`draw_batch` results covering ``num_samples`` draws, ``batch_size`` at a time.

    The first vectorised batch is checked: its first draw is scored again, unvectorised. A model that
    does not vectorise (it raises under the particle plate, or scores that draw differently) is then
    scored one draw at a time, with a ``UserWarning`` saying how to make it broadcast.
    """
    num_samples = check_positive_int("num_samples", num_samples)
    batch_size = check_positive_int("batch_size", batch_size)
    if layout.subsampled:  # full data: bound the memory of one batch
        data = math.prod(size for size, _ in layout.subsampled.values())
        batch_size = max(1, min(batch_size, _FULL_DATA_BUDGET // max(1, data)))
    vectorized, done = True, 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        if vectorized:
            try:
                batch = draw_batch(model, guide, args, kwargs, layout, n, full=full)
                if done == 0:
                    _check_vectorised(model, args, kwargs, layout, batch)
            except Exception as err:  # noqa: BLE001 - any failure under the particle plate
                if done:
                    raise
                vectorized = False
                warnings.warn(_NOT_VECTORISED.format(reason=_one_line(err)), UserWarning, stacklevel=4)
        if not vectorized:
            batch = concat(
                [
                    draw_batch(model, guide, args, kwargs, layout, 1, full=full, vectorized=False)
                    for _ in range(n)
                ]
            )
        yield batch
        done += n


_FULL_DATA_BUDGET = 20_000_000
_NOT_VECTORISED = (
    "the model does not vectorise over draws ({reason}); scoring one draw at a time (slower, same "
    "result). To make it broadcast over a leading batch dimension: index with Vindex(x)[..., i] "
    "instead of x[i], write beta @ X.T instead of X @ beta, give pyro.deterministic its event_dim, "
    "and declare event dimensions of latent sites with .to_event()"
)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split("Trace Shapes:")[0].split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:200]}"


class _Mismatch(Exception):
    pass


def _check_vectorised(model: Callable, args: tuple, kwargs: dict, layout: ModelLayout, batch: Batch) -> None:
    """Raise if the first draw of ``batch`` scores differently when the model runs unvectorised."""
    values = batch.first

    def fixed(*_args: Any, **_kwargs: Any) -> None:
        for name, value in values.items():
            pyro.sample(name, dist.Delta(value, event_dim=value.dim()))

    check = draw_batch(model, fixed, args, kwargs, layout, 1, full=False, vectorized=False)
    a, b = float(batch.log_p[0]), float(check.log_p[0])
    same = a == b or abs(a - b) <= 1e-3 * max(1.0, abs(b))
    if not same and not (math.isnan(a) and math.isnan(b)):
        raise _Mismatch(f"log p of one draw is {a:.6g} vectorised but {b:.6g} on its own")
