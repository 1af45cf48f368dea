r"""Checkpoint files for :func:`pyro_nf.fit`: atomic, code-free, complete.

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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pyro.optim import PyroOptim

from pyro_nf.training.errors import CheckpointError
from pyro_nf.training.guard import DivergenceGuard, restore

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_checkpoint_target",
    "apply_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

#: Value of the ``"format"`` key of every checkpoint this version writes.
CHECKPOINT_FORMAT = "pyro_nf.fit/1"

# ---------------------------------------------------------------------------------------------------
# writing and reading


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically.

    The payload is serialised in memory, written to ``<path>.tmp``, flushed and ``fsync``-ed, then
    renamed over ``path`` (atomic on POSIX and Windows); the directory is ``fsync``-ed where possible.

    Args:
        path: destination file.
        payload: dict of plain data (see the module docstring).
    """
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # directories cannot be opened on Windows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def check_checkpoint_target(checkpoint: str | os.PathLike | None, resume: str | os.PathLike | None) -> None:
    """Check, before a fit starts, that ``checkpoint`` can be written without destroying anything.

    Raises:
        ValueError: ``checkpoint`` is a directory, lies under a file, or names an existing file that
            is not a pyro_nf fit checkpoint (it is never overwritten).

    Warns:
        UserWarning: it names an earlier pyro_nf checkpoint and ``resume`` is not that file: the
            earlier checkpoint will be replaced.
    """
    if checkpoint is None:
        return
    path = Path(checkpoint)
    if str(checkpoint) == "" or path.is_dir():
        raise ValueError(f"checkpoint must be a file path, got the directory {str(checkpoint)!r}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"checkpoint {str(path)!r} lies under {str(parent)!r}, which is a file")
            break
    if not path.exists():
        return
    try:
        load_checkpoint(path)
    except CheckpointError:
        raise ValueError(
            f"refusing to overwrite {str(path)!r} with a checkpoint: it exists and is not a pyro_nf fit "
            "checkpoint; choose another path or remove the file"
        ) from None
    if resume is None or Path(resume).resolve() != path.resolve():
        warnings.warn(
            f"checkpoint {str(path)!r} holds an earlier fit and will be replaced; pass resume={str(path)!r} "
            "to continue that fit instead",
            UserWarning,
            stacklevel=3,
        )


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, flushed and ``fsync``-ed (a crash leaves at worst a partial file
    at ``path``, never a partial checkpoint at the destination)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


_REQUIRED_KEYS = (
    "format",
    "step",
    "losses",
    "params",
    "guide_state",
    "optim_state",
    "rng",
    "guard",
    "config",
)


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
            f"data (nothing in it was executed). Torch said: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} (truncated or corrupt?): {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a pyro_nf fit checkpoint "
            f"(format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks entries {missing}")
    return payload


def apply_checkpoint(
    ckpt: dict,
    guide: Callable,
    params: dict[str, torch.Tensor],
    config: dict,
    optim: PyroOptim,
    guard: DivergenceGuard,
    path: str | os.PathLike,
) -> None:
    """Copy a checkpoint's parameters and optimizer state into this fit, after checking they fit."""
    for key, value in config.items():
        if ckpt["config"].get(key) != value:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written with {key}="
                f"{ckpt['config'].get(key)!r}; this fit uses {key}={value!r}"
            )
    saved = ckpt["params"]
    if set(saved) != set(params):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is for other parameters: only in the checkpoint "
            f"{sorted(set(saved) - set(params))}, only in this fit {sorted(set(params) - set(saved))}"
        )
    for name, p in params.items():
        if saved[name].shape != p.shape:
            raise CheckpointError(
                f"parameter {name!r} has shape {tuple(saved[name].shape)} in the "
                f"checkpoint but {tuple(p.shape)} here"
            )
    if isinstance(guide, torch.nn.Module) and ckpt["guide_state"]:
        guide.load_state_dict(ckpt["guide_state"])
    restore(params, saved)
    try:
        guard.load_state_dict(ckpt["guard"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} has an invalid guard state: {err}") from err
    optim.set_state(ckpt["optim_state"])
