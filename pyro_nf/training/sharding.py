r"""Cutting data arguments into per-rank shards for data-parallel :func:`pyro_nf.fit`.

Example:
    >>> import torch
    >>> shard(torch.arange(10), rank=1, world_size=3)
    tensor([4, 5, 6])
    >>> shard({"x": torch.zeros(10, 2), "y": torch.ones(10)}, rank=2, world_size=3)["x"].shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["shard"]


def _rank_and_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None and world_size is None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "shard() needs an initialised process group (see init_process_group) or explicit "
                "rank= and world_size="
            )
        return dist.get_rank(), dist.get_world_size()
    if rank is None or world_size is None:
        raise ValueError("give both rank= and world_size=, or neither (then the process group's)")
    if not (
        isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size
    ):
        raise ValueError(
            f"need integers 0 <= rank < world_size; got rank={rank!r}, world_size={world_size!r}"
        )
    return rank, world_size


def shard(
    value: Any,
    dim: int = 0,
    *,
    name: str = "value",
    rank: int | None = None,
    world_size: int | None = None,
) -> Any:
    r"""This rank's contiguous block of ``value`` along dimension ``dim``.

    The :math:`N` entries are cut into ``world_size`` blocks of :math:`\lfloor N/P \rfloor` or
    :math:`\lceil N/P \rceil` entries (``torch.tensor_split``); rank *r* gets block *r*, copied (the
    full array can be freed). Dicts, lists and tuples are sharded entry by entry, all along ``dim``.

    Args:
        value: a tensor, NumPy array, or a dict / list / tuple of them (the per-observation data).
        dim: the dimension the model's plate runs over (the plate's ``dim`` counted from the left).
        name: what to call ``value`` in error messages (e.g. the model argument's name).
        rank, world_size: default: the initialised process group's.

    Raises:
        ValueError: something that cannot be split, named: a non-array entry, a 0-d tensor, fewer
            entries than ranks, or container entries of different lengths along ``dim``.

    Example:
        >>> shard(torch.arange(5), rank=0, world_size=2), shard(torch.arange(5), rank=1, world_size=2)
        (tensor([0, 1, 2]), tensor([3, 4]))
    """
    rank, world_size = _rank_and_size(rank, world_size)
    lengths: dict[str, int] = {}
    out = _shard(value, dim, name, rank, world_size, lengths)
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(
            f"cannot shard {name}: its entries have different lengths along dimension {dim} ({sizes}); "
            "blocks cut from them would pair observations wrongly. Shard only the per-observation entries"
        )
    return out


def _shard(value: Any, dim: int, name: str, rank: int, size: int, lengths: dict[str, int]) -> Any:
    if isinstance(value, dict):
        return {k: _shard(v, dim, f"{name}[{k!r}]", rank, size, lengths) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        parts = [_shard(v, dim, f"{name}[{i}]", rank, size, lengths) for i, v in enumerate(value)]
        return type(value)(parts) if type(value) in (list, tuple) else type(value)(*parts)
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise ValueError(
            f"cannot shard {name}: a {type(value).__name__} is not a tensor or array. Shard only the "
            "per-observation data and give every rank the same value of the rest"
        )
    if value.ndim == 0 or not -value.ndim <= dim < value.ndim:
        raise ValueError(f"cannot shard {name} along dimension {dim}: it has shape {tuple(value.shape)}")
    n = value.shape[dim]
    if n < size:
        raise ValueError(
            f"cannot shard {name} along dimension {dim}: it has {n} entries there, fewer than the "
            f"{size} ranks (every rank needs at least one observation)"
        )
    lengths[name] = n
    if isinstance(value, np.ndarray):
        return np.array_split(value, size, axis=dim)[rank].copy()
    return torch.tensor_split(value, size, dim=dim)[rank].clone()
