"""Issue 9 item 3: diagnostics and the ArviZ bridge evaluate subsampled models on their full data."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_nf import diagnose, to_inference_data

N = 2000
Y = 1.5 + torch.randn(N, generator=torch.Generator().manual_seed(0))
POST_SD = 1.0 / math.sqrt(N + 0.01)
POST_MEAN = float(Y.sum()) / (N + 0.01)


def model(y, subsample_size=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])


def guide(y, subsample_size=None):  # close to the exact posterior: a good guide
    pyro.sample("mu", dist.Normal(POST_MEAN, 1.1 * POST_SD))


def test_khat_of_a_good_guide_is_good_on_a_subsampled_model():
    full = diagnose(model, guide, Y, num_samples=2000)
    sub = diagnose(model, guide, Y, subsample_size=100, num_samples=2000)
    assert full.khat < 0.5
    assert sub.khat < 0.5, sub.khat  # was > 0.7: every weight carried subsampling noise
    # the same full-data log density, so (same seed) the same weights
    pyro.set_rng_seed(1)
    a = diagnose(model, guide, Y, num_samples=500)
    pyro.set_rng_seed(1)
    b = diagnose(model, guide, Y, subsample_size=100, num_samples=500)
    np.testing.assert_allclose(a.log_p, b.log_p, rtol=1e-5)


def test_inference_data_of_a_subsampled_model_covers_every_datum_in_order():
    idata = to_inference_data(model, guide, Y, subsample_size=100, num_samples=60, batch_size=25)
    assert dict(idata.log_likelihood.sizes) == {"chain": 1, "draw": 60, "data": N}
    np.testing.assert_array_equal(idata.log_likelihood["data"].values, np.arange(N))
    np.testing.assert_allclose(idata.observed_data["obs"].values, Y.numpy(), rtol=1e-6)
    mu = torch.as_tensor(idata.posterior["mu"].values[0, :, None])
    expected = dist.Normal(mu, 1.0).log_prob(Y).numpy()
    np.testing.assert_allclose(idata.log_likelihood["obs"].values[0], expected, rtol=1e-4, atol=1e-4)


def local_model(y, subsample_size=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as idx:
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("obs", dist.Normal(z, 0.1), obs=y[idx])


def test_local_latents_are_labelled_by_their_datum():
    y = torch.arange(40.0)

    def local_guide(y, subsample_size=None):
        pyro.sample("mu", dist.Normal(20.0, 1.0))
        with pyro.plate("data", len(y), subsample_size=subsample_size) as idx:
            pyro.sample("z", dist.Normal(y[idx], 0.01))

    idata = to_inference_data(local_model, local_guide, y, subsample_size=5, num_samples=20)
    z = idata.posterior["z"].values[0]
    assert z.shape == (20, 40)
    np.testing.assert_allclose(z.mean(0), y.numpy(), atol=0.05)
