"""Issue 9 items 7 and 13 (training): checkpoints never destroy a file; fit options are validated."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from pyro_nf import fit

Y = torch.tensor([0.2, 1.1, -0.4])


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _fit(**kw):
    calls = []
    fit(model, AutoNormal(model), Y, num_steps=3, progress=False, callback=lambda s, v: calls.append(s), **kw)
    return calls


def test_checkpoint_never_overwrites_a_file_that_is_not_a_checkpoint(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(ValueError, match="refusing to overwrite .*notes.txt.*not a pyro_nf fit checkpoint"):
        _fit(checkpoint=notes)
    assert notes.read_text() == "my notes\n"


def test_checkpoint_that_is_a_directory_or_under_a_file_fails_before_the_fit(tmp_path):
    calls = []
    with pytest.raises(ValueError, match="must be a file path"):
        fit(
            model,
            AutoNormal(model),
            Y,
            num_steps=3,
            progress=False,
            checkpoint=tmp_path,
            callback=lambda s, v: calls.append(s),
        )
    assert calls == [] and list(tmp_path.iterdir()) == []  # no step taken, no .tmp left
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="which is a file"):
        _fit(checkpoint=tmp_path / "f" / "ck.pt")


def test_replacing_an_earlier_checkpoint_warns_unless_resuming_it(tmp_path):
    path = tmp_path / "ck.pt"
    _fit(checkpoint=path)
    with pytest.warns(UserWarning, match="holds an earlier fit and will be replaced"):
        _fit(checkpoint=path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(model, AutoNormal(model), Y, num_steps=6, progress=False, checkpoint=path, resume=path)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_num_particles_is_validated(bad):
    with pytest.raises(ValueError, match="num_particles must be an integer >= 1"):
        _fit(num_particles=bad)


@pytest.mark.parametrize("bad", [1.5, -1, "0"])
def test_seed_is_validated(bad):
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        _fit(seed=bad)
