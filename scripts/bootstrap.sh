#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything pyro_nf needs (idempotent).
# torch==2.13.0 is installed first: on the project's machines it is a CPU wheel on disk;
# an unpinned torch would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
