r"""Evaluate subsampled models on their full data.

A model with ``pyro.plate(name, size, subsample_size=m)`` scores a random subsample scaled by
:math:`\text{size}/m`: an unbiased but noisy estimate of :math:`\log p(x, z)`. Importance weights
built on it carry that noise (a good guide then looks "unreliable"), and draws of pointwise
log-likelihoods or local latents would be labelled by position in a random subsample. Inside
:func:`full_data` every plate that draws its own subsample uses all of its ``size`` indices
instead (scale 1), in the model and in the guide alike, so :math:`\log p(x, z)` is exact and the
plate coordinates are the data's own indices :math:`0..\text{size}-1`. Plates given explicit
``subsample=`` indices by the model are left alone.

Example:
    >>> import pyro, torch
    >>> with full_data() as expanded:
    ...     with pyro.plate("data", 1000, subsample_size=10) as idx:
    ...         pass
    >>> len(idx), expanded
    (1000, {'data': (1000, 10)})
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyro.poutine.subsample_messenger import SubsampleMessenger

__all__ = ["full_data"]


@contextlib.contextmanager
def full_data() -> Iterator[dict[str, tuple[int, int]]]:
    """Within the block, plates with ``subsample_size < size`` use every index.

    Yields:
        A dict filled as plates are entered: plate name -> ``(size, subsample_size)`` of every plate
        that was expanded.
    """
    expanded: dict[str, tuple[int, int]] = {}
    original = SubsampleMessenger.__dict__["_subsample"]
    inner = original.__func__

    def _subsample(name, size=None, subsample_size=None, subsample=None, use_cuda=None, device=None):  # noqa: ANN001, ANN202
        if size is not None and subsample is None and subsample_size is not None and subsample_size < size:
            expanded[name] = (int(size), int(subsample_size))
            subsample_size = None
        return inner(name, size, subsample_size, subsample, use_cuda, device)

    SubsampleMessenger._subsample = staticmethod(_subsample)
    try:
        yield expanded
    finally:
        SubsampleMessenger._subsample = original
