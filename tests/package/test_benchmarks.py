"""Smoke run of the step-time benchmark (``--quick``): it runs end to end and prints its tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *argv: str) -> str:
    """Run ``benchmarks/<script>`` from the repository root; its stdout (failing on a non-zero exit)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_step_time_quick_prints_every_table():
    out = _run("step_time.py", "--quick")
    for title in ("### 1.", "### 2.", "### 3.", "### 4."):
        assert title in out
    assert "| 2 | 32 |" in out and "| fast |" in out  # table 1 ran AutoIAF through fit's fast path
    for guide in ("meanfield", "diagonal", "fullrank", "lowrank", "planar", "iaf", "maf"):
        assert f"| 2 | {guide} | fast |" in out


def test_clip_cost_prints_its_table():
    out = _run("clip_cost.py", "--dims", "2", "--guides", "realnvp", "--steps", "30")
    row = [line for line in out.splitlines() if line.startswith("| realnvp | 2 |")]
    assert len(row) == 1
    ratio = float(row[0].split("|")[-2])
    assert 0.2 < ratio < 5.0  # a real measurement (timing noise aside), not a placeholder
