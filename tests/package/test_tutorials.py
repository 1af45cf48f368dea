"""Every tutorial notebook runs end to end in fast mode (``PYRO_NF_FAST=1``: same code, few steps)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def test_tutorials_found() -> None:
    assert NOTEBOOKS, f"no notebooks in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel is a subprocess started below: it inherits this process's environment.
    monkeypatch.setenv("PYRO_NF_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel runs in tutorials/: make it import this checkout's pyro_nf, not an installed copy
    root = str(TUTORIALS.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
