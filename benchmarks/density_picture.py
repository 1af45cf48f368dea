"""Flows as likelihoods of data, sampled to a picture: FlowDensity against a full-covariance Gaussian.

Usage: ``python benchmarks/density_picture.py [--steps 1000] [--out docs/density_picture.png]``.

Fits, by maximum likelihood under Pyro's SVI (an empty guide, Adam lr 0.01, full batch of 1,000
points), the default :class:`pyro_nf.FlowDensity` (ActNorm then three spline couplings with LU-linear
layers between, hidden widths (32, 32)) to

- two moons (noise sd 0.1, as scikit-learn's ``make_moons``),
- a ring of radius 1 (noise sd 0.1),
- a conditional ring :math:`p(x \\mid c)`, radius :math:`0.5 + 1.5c`, :math:`c \\sim U(0, 1)`
  (``context_dim=1``; the baseline is the linear-Gaussian :math:`N(x;\\ B[1, c], \\Sigma)`),

and the maximum-likelihood (full-covariance) Gaussian to each. Prints the mean held-out
log-likelihood per point (2,000 fresh points) of both and the margin, and writes one PNG: a row per
data set, columns data / flow samples / Gaussian samples (the conditional row coloured by
:math:`c`, one draw per held-out :math:`c`). One thread, seed 0.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402

from pyro_nf.guides.density import FlowDensity  # noqa: E402

Data = tuple[torch.Tensor, torch.Tensor | None]


def two_moons(n: int, g: torch.Generator) -> Data:
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x, y], -1) + 0.1 * torch.randn(n, 2, generator=g), None


def ring(n: int, g: torch.Generator, conditional: bool = False) -> Data:
    c = torch.rand(n, 1, generator=g)
    radius = 0.5 + 1.5 * c if conditional else torch.ones(n, 1)
    angle = 2 * math.pi * torch.rand(n, 1, generator=g)
    x = radius * torch.cat([torch.cos(angle), torch.sin(angle)], -1) + 0.1 * torch.randn(n, 2, generator=g)
    return x, (c if conditional else None)


def gaussian(x: torch.Tensor, c: torch.Tensor | None):
    """ML Gaussian with full covariance; its mean linear in ``c`` when there is a context.
    Returns a function ``c -> MultivariateNormal``."""
    design = torch.ones(len(x), 1) if c is None else torch.cat([torch.ones_like(c), c], -1)
    coef = torch.linalg.lstsq(design, x).solution
    resid = x - design @ coef
    cov = resid.T @ resid / len(x)

    def at(c_new: torch.Tensor | None, n: int) -> torch.distributions.MultivariateNormal:
        d = torch.ones(n, 1) if c_new is None else torch.cat([torch.ones_like(c_new), c_new], -1)
        return torch.distributions.MultivariateNormal(d @ coef, cov)

    return at


def fit_flow(x: torch.Tensor, c: torch.Tensor | None, steps: int) -> FlowDensity:
    pyro.clear_param_store()
    flow = FlowDensity(2, context_dim=0 if c is None else c.shape[-1], hidden_dims=(32, 32))
    flow.data_init(x, c)

    def model(x, c):
        pyro.module("flow", flow)
        with pyro.plate("data", len(x)):
            pyro.sample("x", flow.distribution(context=c), obs=x)

    def guide(x, c):  # no latents: SVI is maximum likelihood for the flow's parameters
        pass

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(steps):
        svi.step(x, c)
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", default="docs/density_picture.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {
        "two moons": lambda n, g: two_moons(n, g),
        "ring": lambda n, g: ring(n, g),
        "ring, radius 0.5 + 1.5c": lambda n, g: ring(n, g, conditional=True),
    }
    fig, axes = plt.subplots(len(sets), 3, figsize=(7.5, 7.5))
    print(f"steps={args.steps}, 1000 training points, 2000 held-out points; log-likelihood per point")
    print(f"{'data':<26} {'flow':>8} {'gaussian':>9} {'margin':>7} {'fit_s':>6}")
    for row, (name, make) in enumerate(sets.items()):
        g = torch.Generator().manual_seed(row)
        (x, c), (x_test, c_test) = make(1000, g), make(2000, g)
        torch.manual_seed(row)
        start = time.perf_counter()
        flow = fit_flow(x, c, args.steps)
        seconds = time.perf_counter() - start
        gauss = gaussian(x, c)
        with torch.no_grad():
            flow_ll = flow.log_prob(x_test, context=c_test).mean().item()
            gauss_ll = gauss(c_test, len(x_test)).log_prob(x_test).mean().item()
            if c is None:
                flow_draws = flow.distribution().sample((len(x_test),))
            else:
                flow_draws = flow.distribution(context=c_test).sample()
            gauss_draws = gauss(c_test, len(x_test)).sample()
        print(
            f"{name:<26} {flow_ll:8.3f} {gauss_ll:9.3f} {flow_ll - gauss_ll:7.3f} {seconds:6.1f}", flush=True
        )
        colour = {} if c is None else {"c": c_test[:, 0].numpy(), "cmap": "viridis", "vmin": 0, "vmax": 1}
        panels = [
            (x_test, "data (held out)"),
            (flow_draws, f"flow: {flow_ll:.2f} nats/pt"),
            (gauss_draws, f"Gaussian: {gauss_ll:.2f} nats/pt"),
        ]
        for col, (pts, title) in enumerate(panels):
            ax = axes[row, col]
            ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=1.5, alpha=0.6, **colour)
            ax.set_title(title if col else f"{name}: {title}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
