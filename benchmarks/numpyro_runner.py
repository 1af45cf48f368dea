"""NumPyro's ``AutoIAFNormal`` step for ``step_time.py`` table 1 (benchmark only; NumPyro and JAX come with
``pip install -e '.[bench]'``, which CI does not install).

The same model as table 1 (``x ~ Normal(0, 1)^D``, five observations ``y_n ~ Normal(x, 1)``) and the same
flow (``num_flows`` IAF layers, MADE hidden widths ``hidden``, no skip connections), ``Trace_ELBO`` with one
particle and Adam, ``svi.update`` compiled once with ``jax.jit``. The compile (the first call) is timed
separately and excluded from the per-step cost, which is measured with ``block_until_ready``. JAX is limited
to one CPU thread (as torch is in the benchmark) unless ``XLA_FLAGS`` is already set.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as nd  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoIAFNormal  # noqa: E402


class NumPyroRunner:
    """``runner(steps)``: ms per compiled ``svi.update`` step; ``compile_s``: seconds of the first call."""

    def __init__(self, y: np.ndarray, hidden: tuple[int, ...], num_flows: int = 2) -> None:
        dim = y.shape[-1]
        y = jax.numpy.asarray(y)

        def model():
            x = numpyro.sample("x", nd.Normal(0.0, 1.0).expand([dim]).to_event(1))
            with numpyro.plate("obs", y.shape[0]):
                numpyro.sample("y", nd.Normal(x, 1.0).to_event(1), obs=y)

        guide = AutoIAFNormal(model, num_flows=num_flows, hidden_dims=list(hidden), skip_connections=False)
        svi = SVI(model, guide, numpyro.optim.Adam(1e-3), Trace_ELBO())
        self.state = svi.init(jax.random.PRNGKey(0))
        self.update = jax.jit(svi.update)
        t0 = time.perf_counter()
        self.state, loss = self.update(self.state)
        loss.block_until_ready()
        self.compile_s = time.perf_counter() - t0
        self.path, self.reason = "", ""

    def __call__(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.state, loss = self.update(self.state)
        loss.block_until_ready()
        return (time.perf_counter() - t0) / steps * 1e3
