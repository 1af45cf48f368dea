"""Small helpers every layer may use: RNG isolation and argument validation.

Example:
    >>> import torch
    >>> before = torch.get_rng_state()
    >>> with isolated_rng():
    ...     _ = torch.randn(3)
    >>> torch.equal(before, torch.get_rng_state())
    True
    >>> check_positive_int("num_flows", 0)
    Traceback (most recent call last):
    ...
    ValueError: num_flows must be an integer >= 1, got 0
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "check_positive_float",
    "check_positive_int",
    "isolated_rng",
    "restore_rng_state",
]


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """``float(value)`` if it is a real number ``> 0`` (finite unless ``allow_inf``), else a
    ``ValueError`` naming ``name``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not value > 0 or (not allow_inf and not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive{'' if allow_inf else ' finite'} number, got {value!r}")
    return float(value)


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
    np.random.set_state(
        (
            npst["name"],
            npst["key"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the body, then put every global RNG back where it was (the body's draws leave no trace)."""
    saved = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(saved)
