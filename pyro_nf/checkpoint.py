r"""Checkpoint files for :func:`pyro_nf.fit.fit`: atomic, code-free, complete.

A checkpoint is a ``torch.save`` file of a dict holding only tensors, numbers, strings, ``None`` and
lists, tuples and dicts of those, so that it loads with ``torch.load(weights_only=True)``: loading a
checkpoint can never execute code. Files are written atomically (serialise to memory, write a temporary
file next to the target, ``fsync``, then ``os.replace``), so a process killed at any moment leaves
either the previous complete checkpoint or the new complete one, never a truncated file.

This module also captures and restores the random-number-generator states (torch, CUDA when in use,
Python's ``random`` and NumPy's global generator) as plain data, and offers :func:`preserved_rng`, a
context manager that runs code without disturbing those streams.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "preserved_rng",
    "restore_rng_state",
    "save_checkpoint",
]

#: Value of the ``"format"`` key of every checkpoint this version writes.
CHECKPOINT_FORMAT = "pyro_nf.fit/1"

# Test hooks (used by tests/test_fit.py to kill a fit at an exact point): when the environment
# variable names the step being written, the writer stops halfway through the temporary file,
# creates the file named by PYRO_NF_TEST_SIGNAL_FILE and sleeps until it is killed.
_PAUSE_IN_WRITE_ENV = "PYRO_NF_TEST_PAUSE_IN_WRITE"
_SIGNAL_FILE_ENV = "PYRO_NF_TEST_SIGNAL_FILE"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, is not a pyro_nf checkpoint, or does not fit this fit."""


def pause_point_for_tests(env_var: str, step: int) -> None:
    """Test hook: if ``$env_var == str(step)``, signal the parent and sleep until killed.

    Args:
        env_var: name of the environment variable holding the step to pause at.
        step: the current step.
    """
    want = os.environ.get(env_var)
    if want is None or want.strip() != str(step):
        return
    signal_file = os.environ.get(_SIGNAL_FILE_ENV)
    if signal_file:
        Path(signal_file).write_text(f"{env_var}={step}\n")
    while True:  # pragma: no cover - ended by SIGKILL from the test
        time.sleep(60)


# ---------------------------------------------------------------------------------------------------
# random-number-generator state as plain data


def capture_rng_state() -> dict[str, Any]:
    """Return the global RNG states (torch, CUDA if initialised, Python, NumPy) as plain data."""
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": (int(version), tuple(int(v) for v in internal), gauss_next),
        "numpy": {
            "name": str(np_state[0]),
            "key": torch.as_tensor(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng_state`.

    Args:
        state: the dict returned by :func:`capture_rng_state` (possibly after a save/load round trip).
    """
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["key"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body, then put every global RNG back where it was (the body's draws leave no trace)."""
    saved = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(saved)


# ---------------------------------------------------------------------------------------------------
# writing and reading


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any], *, step: int) -> None:
    """Write ``payload`` to ``path`` atomically.

    The payload is serialised in memory, written to ``<path>.tmp``, flushed and ``fsync``-ed, then
    renamed over ``path`` (atomic on POSIX and Windows); the directory is ``fsync``-ed where possible.

    Args:
        path: destination file.
        payload: dict of plain data (see the module docstring).
        step: the fit step the payload belongs to (only used by the test hook).
    """
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        half = len(data) // 2
        fh.write(data[:half])
        if os.environ.get(_PAUSE_IN_WRITE_ENV) is not None:
            fh.flush()
            os.fsync(fh.fileno())
            pause_point_for_tests(_PAUSE_IN_WRITE_ENV, step)
        fh.write(data[half:])
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # directories cannot be opened on Windows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


_REQUIRED_KEYS = ("format", "step", "losses", "params", "guide_state", "optim_state",
                  "rng", "guard", "config")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything but plain data.

    Args:
        path: the checkpoint file.

    Returns:
        The payload dict (tensors on the CPU).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated or corrupt, holds anything ``weights_only`` loading
            refuses (e.g. a pickled callable: it is *not* run), or is not a pyro_nf fit checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing checkpoint {str(path)!r}: it holds objects other than tensors and plain "
            f"data (nothing in it was executed). Torch said: {str(err).splitlines()[0]}") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} (truncated or corrupt?): "
                              f"{err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{str(path)!r} is not a pyro_nf fit checkpoint "
                              f"(format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks entries {missing}")
    return payload
