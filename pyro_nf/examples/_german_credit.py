r"""Bayesian logistic regression on German credit (Inference Gym
``GermanCreditNumericLogisticRegression``).

.. math::

    w \sim N(0, I_{25}), \qquad
    \mathrm{label}_n \sim \mathrm{Bernoulli}\big(\mathrm{logits} = [\tilde X_n, 1] \cdot w\big),
    \quad n = 1, \dots, 1000,

where :math:`\tilde X` holds the 24 numeric features of UCI Statlog ``german.data-numeric``,
z-scored column-wise over all 1000 rows (``ddof = 0``), the bias is the *last* weight ``w[24]``, and
``label = class - 1`` (1 = bad credit; 300 of 1000). Reference: Inference Gym ground truth (CmdStan
NUTS, 10 chains x 150,000 draws), means and sds only.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_nf.examples._data import Example, describe, load_json, summaries_from_json, tensor

__all__ = ["german_credit", "german_credit_data", "make_german_credit_example"]

_FILE = "german_credit_logistic.json"


def german_credit(features: torch.Tensor, y: torch.Tensor | None = None) -> None:
    r"""Logistic regression with a standard-normal prior (Inference Gym German credit).

    .. math::

        w \sim N(0, I_{D+1}), \qquad
        y_n \sim \mathrm{Bernoulli}\Big(\mathrm{logits} = \sum_{d=1}^{D} \tilde X_{nd} w_{d-1}
            + w_D\Big), \quad n = 1..N.

    Why mean-field does (nearly) well: with N = 1000 the posterior is close to Gaussian and the
    z-scored features are only mildly correlated, so a factorised Gaussian gets the means right and
    the sds a little low; every flow should match the reference within a few percent.

    Args:
        features: Standardised features :math:`\tilde X`, shape ``(N, D)`` (no bias column).
        y: Labels in ``{0., 1.}``, shape ``(N,)`` (plate ``"applicant"``); ``None`` draws them.
    """
    num_weights = features.shape[-1] + 1
    w = pyro.sample("w", dist.Normal(features.new_zeros(num_weights), 1.0).to_event(1))
    # Elementwise product, not matmul: w may carry batch dims (particles) left of the plate dim.
    logits = (features * w[..., :-1]).sum(-1) + w[..., -1]
    with pyro.plate("applicant", features.shape[-2]):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def german_credit_data() -> dict[str, torch.Tensor]:
    r"""Model keywords from the shipped raw data: ``features`` z-scored over all rows with
    ``ddof = 0`` (in ``float64``, then cast to the default dtype) and labels ``y = class - 1``."""
    raw = load_json(_FILE)["data"]
    x = np.asarray(raw["raw_features"], dtype=np.float64)
    z = (x - x.mean(axis=0)) / x.std(axis=0, ddof=0)
    labels = np.asarray(raw["class_column"], dtype=np.float64) - 1.0
    return {"features": tensor(z), "y": tensor(labels)}


def make_german_credit_example() -> Example:
    """The ``german_credit`` example: latent ``w`` (25; bias last), reference means and sds."""
    doc = load_json(_FILE)
    return Example(
        name="german_credit",
        model=german_credit,
        data=dict(german_credit_data()),
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], {"w": "weights"}),
    )
