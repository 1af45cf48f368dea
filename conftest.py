"""Shared test set-up: seeded, validated, clean param store before every test.

Options: ``--dtype float32|float64`` sets torch's default dtype for the run; ``--device cpu|cuda|...``
torch's default device (``torch.set_default_device``), so tensors the tests and the library create
without an explicit device land there (the ``device`` fixture gives it to tests that need it).
"""

from __future__ import annotations

import os

import pyro
import pytest
import torch
from hypothesis import settings

# Deterministic property-based tests: derandomised, no deadline (CPU timing is noisy).
settings.register_profile("pyro_nf", derandomize=True, deadline=None, max_examples=25, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pyro_nf"))

# The test models are tiny: one thread is fastest and avoids oversubscribing CI's two cores.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="torch default dtype for the test run",
    )
    parser.addoption("--device", default="cpu", help="torch default device for the test run (e.g. cuda)")


def pytest_configure(config: pytest.Config) -> None:
    torch.set_default_dtype(getattr(torch, config.getoption("--dtype")))
    device = torch.device(config.getoption("--device"))
    if device.type != "cpu":
        torch.set_default_device(device)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """The ``--device`` of the run."""
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()
