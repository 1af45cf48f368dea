r"""Minnesota radon with contextual effects, half-normal priors (Inference Gym
``RadonContextualEffectsHalfNormalMinnesota``).

.. math::

    \mu_c \sim N(0, 1), \quad \sigma_c \sim N^+(0, 1), \quad
    c_j \sim N(\mu_c, \sigma_c)\ (j = 0..84), \quad w \sim N(0, I_3), \quad \sigma \sim N^+(0, 1),

    \log\mathrm{radon}_n \sim N\big(w_0 \log\mathrm{uranium}_n + w_1\,\mathrm{floor}_n
        + w_2\,\overline{\mathrm{floor}}_{j(n)} + c_{j(n)},\ \sigma\big), \quad n = 0..918.

Data: the 919 Minnesota rows of Gelman & Hill's ``srrs2.dat`` processed as Inference Gym's
``data.py`` does (activity :math:`\le 0` replaced by 0.1, then logged;
:math:`\overline{\mathrm{floor}}_j` the mean floor of county :math:`j`). Reference: Inference
Gym ground truth (CmdStan NUTS, 10 x 20,000 draws), means and sds only.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_nf.examples._data import Example, describe, load_json, summaries_from_json, tensor

__all__ = ["make_radon_example", "radon", "radon_data"]

_FILE = "radon_mn_contextual_halfnormal.json"
#: Activity readings at or below zero are replaced by this before taking logs (Inference Gym).
_MIN_ACTIVITY = 0.1


def radon(
    J: int,
    county: torch.Tensor,
    floor: torch.Tensor,
    log_uranium: torch.Tensor,
    floor_by_county: torch.Tensor,
    log_radon: torch.Tensor | None = None,
) -> None:
    r"""Hierarchical linear regression of log radon with county effects (Inference Gym).

    .. math::

        \mathrm{county\_effect}_j \sim N(\mathrm{county\_effect\_mean},
            \mathrm{county\_effect\_scale}), \qquad
        \log\mathrm{radon}_n \sim N\big(\mathrm{weight}\cdot(\log\mathrm{uranium}_n,
            \mathrm{floor}_n, \mathrm{floor\_by\_county}_{j(n)})
            + \mathrm{county\_effect}_{j(n)},\ \mathrm{log\_radon\_scale}\big),

    with ``county_effect_mean`` :math:`\sim N(0,1)`, ``county_effect_scale`` :math:`\sim N^+(0,1)`,
    ``weight`` :math:`\sim N(0, I_3)`, ``log_radon_scale`` :math:`\sim N^+(0,1)`.

    Why mean-field struggles: the county effects are centered on ``county_effect_mean`` with spread
    ``county_effect_scale`` (a funnel, softened by ~11 houses per county); and
    ``county_effect_mean``, ``weight[2]`` and the county effects are correlated because
    ``floor_by_county`` is constant within a county. Mean-field typically underestimates
    ``county_effect_scale`` and the county-effect sds.

    Args:
        J: Number of counties (plate ``"county"``).
        county: County index of each house, ``torch.long``, shape ``(N,)``.
        floor: 0 = basement, 1 = first floor, shape ``(N,)``.
        log_uranium: Log county uranium level of each house, shape ``(N,)``.
        floor_by_county: Mean of ``floor`` per county, shape ``(J,)``.
        log_radon: Observed log radon, shape ``(N,)`` (plate ``"house"``); ``None`` draws it.
    """
    county_effect_mean = pyro.sample("county_effect_mean", dist.Normal(0.0, 1.0))
    county_effect_scale = pyro.sample("county_effect_scale", dist.HalfNormal(1.0))
    with pyro.plate("county", J):
        county_effect = pyro.sample("county_effect", dist.Normal(county_effect_mean, county_effect_scale))
    weight = pyro.sample("weight", dist.Normal(floor.new_zeros(3), 1.0).to_event(1))
    log_radon_scale = pyro.sample("log_radon_scale", dist.HalfNormal(1.0))
    loc = (
        weight[..., 0] * log_uranium
        + weight[..., 1] * floor
        + weight[..., 2] * floor_by_county[county]
        + county_effect[..., county]
    )
    with pyro.plate("house", county.shape[-1]):
        pyro.sample("log_radon", dist.Normal(loc, log_radon_scale), obs=log_radon)


def radon_data() -> dict[str, torch.Tensor | int]:
    r"""Model keywords from the shipped data. ``log_radon`` is recomputed from the raw activity
    (readings :math:`\le 0` replaced by 0.1, then logged) and ``floor_by_county`` from ``floor`` and
    ``county``, in ``float64`` before the cast to the default dtype."""
    raw = load_json(_FILE)["data"]
    county = np.asarray(raw["county"], dtype=np.int64)
    floor = np.asarray(raw["floor"], dtype=np.float64)
    activity = np.asarray(raw["activity_raw"], dtype=np.float64)
    num_counties = int(raw["J"])
    floor_by_county = np.bincount(county, weights=floor, minlength=num_counties) / np.bincount(
        county, minlength=num_counties
    )
    return {
        "J": num_counties,
        "county": torch.tensor(county, dtype=torch.long),
        "floor": tensor(floor),
        "log_uranium": tensor(raw["log_uranium"]),
        "floor_by_county": tensor(floor_by_county),
        "log_radon": tensor(np.log(np.where(activity <= 0, _MIN_ACTIVITY, activity))),
    }


def make_radon_example() -> Example:
    """The ``radon`` example: 91 latent dimensions, reference means and sds."""
    doc = load_json(_FILE)
    names = {
        s: s
        for s in ("county_effect_mean", "county_effect_scale", "county_effect", "weight", "log_radon_scale")
    }
    return Example(
        name="radon",
        model=radon,
        data=radon_data(),
        description=describe(doc),
        reference=summaries_from_json(doc["reference"], names),
    )
