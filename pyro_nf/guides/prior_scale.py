r"""The prior's scale of each unconstrained latent coordinate, for setting up conditioners.

A coupling layer's conditioner is an MLP of some latent coordinates. PyTorch initialises its first
layer for inputs of unit scale (the ReLU units' kinks :math:`-b_j / w_j` lie within a few units of
0); where the guide keeps its own start (no Laplace whitening) the layers act on the model's raw
unconstrained coordinates, which can be ten times wider (the banana's :math:`x_0 \sim N(0, 10)`):
then the kinks all sit in the bulk and the conditioner can only extrapolate linearly beyond it, and
the reverse KL shrinks the tails. :func:`prior_scales` estimates each coordinate's scale,

.. math:: s_i = \mathrm{IQR}_i / 1.349 \quad\text{(the sd of a Normal with that IQR)},

from draws of the model's prior (the model run forward, observed sites fixed), in the guide's
packing order, so that a conditioner can be set up for inputs of those scales
(:meth:`pyro_nf.transforms.conditioner.ZeroMLP.scale_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from torch.distributions import biject_to

from pyro_nf._util import isolated_rng

#: prior draws behind the estimate
NUM_PRIOR_DRAWS = 200
#: the estimate is clamped to this range (a flat prior must not switch a conditioner off)
SCALE_RANGE = (1e-2, 1e2)


def prior_scales(
    model: Callable, prototype: poutine.Trace, args: tuple, kwargs: dict, num_draws: int = NUM_PRIOR_DRAWS
) -> tuple[torch.Tensor | None, str]:
    r"""Robust scale :math:`\mathrm{IQR}/1.349` of every unconstrained latent coordinate under the
    prior, clamped to :data:`SCALE_RANGE`, or ``(None, reason)`` when the model's prior cannot be
    drawn site by site like its prototype trace (e.g. dynamic structure). Runs off the global
    random stream (a fixed internal seed).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     x0 = pyro.sample("x0", dist.Normal(0.0, 10.0))
        ...     pyro.sample("x1", dist.Normal(0.03 * (x0**2 - 100), 1.0))
        >>> proto = poutine.trace(model).get_trace()
        >>> scales, _ = prior_scales(model, proto, (), {})
        >>> [round(float(s)) for s in scales]  # x0: 10; x1's prior spread: 2.7
        [10, 3]
    """
    sites = [(name, site) for name, site in prototype.iter_stochastic_nodes()]
    rows = []
    try:
        with isolated_rng(), torch.no_grad(), poutine.block():
            torch.manual_seed(0)
            for _ in range(num_draws):
                trace = poutine.trace(model).get_trace(*args, **kwargs)
                parts = []
                for name, site in sites:
                    value = trace.nodes[name]["value"]
                    parts.append(biject_to(site["fn"].support).inv(value).reshape(-1))
                rows.append(torch.cat(parts))
    except Exception as err:  # noqa: BLE001 - any failure means "no estimate", never a failed fit
        return None, f"{type(err).__name__}: {err}"
    z = torch.stack(rows).double()
    q = torch.quantile(z, torch.tensor([0.25, 0.75], dtype=z.dtype), dim=0)
    scale = (q[1] - q[0]) / 1.3489795003921634
    scale = torch.where(torch.isfinite(scale), scale, torch.ones_like(scale))
    return scale.clamp(*SCALE_RANGE), ""


def scale_conditioners(layers: Any, scales: torch.Tensor) -> int:
    """Set every coupling layer's conditioner (``layer.net``, a ``ZeroMLP`` reading the coordinates
    ``layer.conditioning_idx``) up for inputs of ``scales``; returns how many were set."""
    count = 0
    for layer in layers:
        net, idx = getattr(layer, "net", None), getattr(layer, "conditioning_idx", None)
        if net is None or idx is None or getattr(net, "in_features", -1) != len(idx) or not len(idx):
            continue  # not a coupling conditioner, or one that also reads a context
        net.scale_inputs(scales[idx])
        count += 1
    return count
