r"""Data-parallel SVI on ``torch.distributed``: one process per device, gradients all-reduced.

Launch ``P`` copies of a script with ``torchrun --nproc_per_node=P script.py`` (gloo on CPU, NCCL on
GPUs). Each rank *r* passes :func:`pyro_nf.fit` its own shard :math:`D_r` of the observations
(:func:`shard`) and the same model and guide; inside a process group ``fit()`` (``distributed=None``
detects it; ``True`` or a :class:`DataParallel` asks for it)

1. checks the model can be split this way (below) and broadcasts the guide's parameters and buffers
   from rank 0, so the replicas start identical;
2. scales every observed site inside a *sharded plate* by the world size :math:`P` (and every
   enumerated discrete site there, which ``TraceEnum_ELBO`` sums out per observation), so that rank
   *r*'s loss for a draw :math:`z` of the guide is

   .. math:: L_r(\phi; z) = -\Big[\log p(z) + P \sum_{i \in D_r} \log p(x_i \mid z)
             - \log q_\phi(z)\Big],

   and averages loss and gradients over the ranks before each optimiser step (one ``all_reduce``),
   so every rank takes the same step. With one shared draw :math:`z` (``same_noise=True``) the
   average :math:`\frac1P \sum_r L_r` *is* the full-data loss
   :math:`-[\log p(z) + \sum_i \log p(x_i \mid z) - \log q_\phi(z)]` and its gradient the
   full-data gradient, for shards of any sizes (for equal shards :math:`P = N / N_r`, the usual
   ``N_total / N_local`` scaling). With a draw :math:`z_r` per rank (the default: rank *r* seeds
   with ``seed + r``) the average is an unbiased estimate of the full-data ELBO whose prior and
   entropy terms are averaged over :math:`P` draws. A ``pyro.plate(..., subsample_size=B)`` over a
   shard multiplies in Pyro's own :math:`N_r / B`;
3. lets rank 0 alone show progress and write checkpoints (holding every rank's RNG state, so that
   a resume of the group, every rank loading the same file, continues bit-identically).

The *sharded plates* are, unless named with ``DataParallel(plates=...)``, every plate that holds
an observed site. What cannot be split raises :class:`~pyro_nf.training.errors.FitInputError`
naming the site: a latent site inside a sharded plate (its per-observation guide parameters would
differ by rank; enumerated discrete sites are fine), latent sites or parameters whose shapes differ
between ranks, an observed site outside the sharded plates whose value differs between ranks (fit
cannot tell how its likelihood factorises), and a sharded site with the same value on every rank
(data not sharded: the likelihood would count it :math:`P` times; ``check_data=False`` allows it).
:func:`~pyro_nf.training.sharding.shard` refuses arguments it cannot split, naming them.

Example (a one-process group, so that it runs anywhere):
    >>> import os, tempfile, pyro, pyro.distributions as dist, torch
    >>> from pyro.infer.autoguide import AutoNormal
    >>> from pyro_nf import fit
    >>> path = os.path.join(tempfile.mkdtemp(), "rendezvous")
    >>> torch.distributed.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> y = shard(torch.full((20,), 3.0))  # this rank's rows: all 20 here
    >>> result = fit(model, AutoNormal(model), y, num_steps=20, seed=0, distributed=DataParallel())
    >>> len(result.losses)
    20
    >>> torch.distributed.destroy_process_group()
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_nf._util import capture_rng_state, restore_rng_state
from pyro_nf.training.checkpoint import save_checkpoint
from pyro_nf.training.errors import CheckpointError, FitInputError, is_divergence_error
from pyro_nf.training.setup import latent_sites
from pyro_nf.training.sharding import shard

__all__ = ["DataParallel", "any_rank", "init_process_group", "resolve", "restore_rng", "shard", "together"]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_process_group(backend: str | None = None) -> None:
    """Join the process group ``torchrun`` describes in the environment (no-op if already joined).

    ``backend=None`` picks ``"nccl"`` when CUDA is available (and binds this process to GPU
    ``LOCAL_RANK``) and ``"gloo"`` otherwise.

    Raises:
        ValueError: the environment lacks ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` or ``MASTER_PORT``
            (the script was not started by ``torchrun`` or an equivalent launcher).
    """
    if dist.is_initialized():
        return
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ValueError(
            f"no process group to join: environment variables {missing} are not set. Launch with "
            "`torchrun --nproc_per_node=P script.py` (or set them), or call "
            "torch.distributed.init_process_group yourself"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)


@dataclass(frozen=True)
class DataParallel:
    """Options of data-parallel :func:`pyro_nf.fit` (pass as ``fit(..., distributed=DataParallel(...))``).

    Args:
        plates: names of the plates the data are sharded along; ``None``: every plate holding an
            observed site.
        same_noise: every rank draws the same guide sample each step (all seed with ``seed``), so
            the group reproduces one process on the full data; default: independent draws (rank
            *r* seeds with ``seed + r``), a lower-variance gradient.
        check_data: refuse a sharded observed site holding the same values on every rank.
        group: the ``torch.distributed`` process group (default: the whole world).
    """

    plates: tuple[str, ...] | None = None
    same_noise: bool = False
    check_data: bool = True
    group: Any = None

    def __post_init__(self) -> None:
        if self.plates is not None:  # one name or several
            plates = (self.plates,) if isinstance(self.plates, str) else tuple(self.plates)
            if not all(isinstance(p, str) for p in plates):
                raise ValueError(f"DataParallel(plates=...) takes plate names; got {self.plates!r}")
            object.__setattr__(self, "plates", plates)


class _ShardScale(Messenger):
    """Multiply the scale of observed and enumerated sites inside the sharded plates by the world size
    (``TraceEnum_ELBO`` needs one scale for the sites an enumerated site's factor joins)."""

    def __init__(self, plates: frozenset[str], factor: float) -> None:
        super().__init__()
        self.plates, self.factor = plates, factor

    def _process_message(self, msg: dict) -> None:
        if (
            msg["type"] == "sample"
            and (msg["is_observed"] or msg["infer"].get("enumerate") == "parallel")
            and not site_is_subsample(msg)
            and any(f.name in self.plates for f in msg["cond_indep_stack"])
        ):
            msg["scale"] = self.factor * msg["scale"]


def _digest(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        return (
            f"{tuple(data.shape)}:{data.dtype}:"
            + hashlib.sha1(data.view(-1).view(torch.uint8).numpy()).hexdigest()
        )
    return repr(value)


def together(group: _Group | None, fn: Callable, *args: Any, error: type[Exception] = FitInputError) -> Any:
    """``fn(*args)``; in a group, an exception on one rank is raised on every rank (there as ``error``
    naming the rank), so that no rank waits forever in the next collective step."""
    if group is None:
        return fn(*args)
    try:
        out, caught = fn(*args), None
    except Exception as err:  # re-raised below, after the other ranks learn of it
        out, caught = None, err
    messages = group.gather(None if caught is None else f"{type(caught).__name__}: {caught}")
    if caught is not None:
        raise caught
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        raise error(f"rank {failed[0][0]} failed ({len(failed)} in all): {failed[0][1]}")
    return out


def any_rank(group: _Group | None, flag: bool) -> bool:
    """``flag``, or in a group whether it is true on any rank (e.g. a callback asking to stop)."""
    if group is None:
        return flag
    t = torch.tensor([float(flag)], device=group.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group.group)
    return bool(t.item() > 0)


def restore_rng(group: _Group | None, ckpt: dict[str, Any]) -> None:
    """Restore the RNG state of a checkpoint: outside a group its ``"rng"``; in a group this rank's
    own when the world size is unchanged, else rank 0's, then (independent noise) a fresh seed drawn
    from it plus the rank."""
    states = ckpt.get("rng_by_rank") or [ckpt["rng"]]
    if group is None:
        restore_rng_state(ckpt["rng"])
    elif group.config.same_noise or len(states) != group.world_size:
        restore_rng_state(states[0])
        if not group.config.same_noise:
            pyro.set_rng_seed(int(torch.randint(0, 2**31 - group.world_size, ())) + group.rank)
    else:
        restore_rng_state(states[group.rank])


def resolve(distributed: bool | DataParallel | None) -> _Group | None:
    """The group a fit runs on: ``None`` for a single-process fit (see ``fit(distributed=...)``)."""
    if distributed is None:
        on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        return _Group(DataParallel()) if on else None
    if distributed is False:
        return None
    if distributed is True:
        distributed = DataParallel()
    if not isinstance(distributed, DataParallel):
        raise ValueError(f"distributed must be None, a bool or a DataParallel; got {distributed!r}")
    if not dist.is_available():
        raise ValueError("distributed fit needs torch.distributed, which this PyTorch build lacks")
    init_process_group()
    return _Group(distributed)


class _Group:
    """The process group of one data-parallel fit and the collective steps ``fit()`` calls."""

    def __init__(self, config: DataParallel) -> None:
        self.config, self.group = config, config.group
        self.rank, self.world_size = dist.get_rank(self.group), dist.get_world_size(self.group)
        self.src = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        self.is_main = self.rank == 0
        nccl = dist.get_backend(self.group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.plates: frozenset[str] = frozenset()

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def rank_seed(self, seed: int) -> int:
        """The seed of this rank: ``seed`` (``same_noise``) or ``seed + rank``."""
        return seed if self.config.same_noise else seed + self.rank

    def prepare(self, model: Callable, trace: Any) -> Callable:
        """Check the model can be split (module docstring); return it with the likelihood scaled."""
        sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
        observed = {n: s for n, s in sites.items() if s["is_observed"]}
        known = {f.name for s in sites.values() for f in s["cond_indep_stack"]}
        if self.config.plates is None:
            plates = {f.name for s in observed.values() for f in s["cond_indep_stack"]}
        else:
            plates = set(self.config.plates)
            unknown = sorted(plates - known)
            if unknown:
                raise FitInputError(
                    f"DataParallel(plates=...) names plates {unknown} the model does not have "
                    f"(its plates: {sorted(known)})"
                )
        latents = latent_sites(trace)
        for name in latents:
            if sites[name]["infer"].get("enumerate") == "parallel":
                continue  # summed out by TraceEnum_ELBO per observation: no guide parameters
            inside = [f.name for f in sites[name]["cond_indep_stack"] if f.name in plates]
            if inside:
                raise FitInputError(
                    f"latent site {name!r} is local to the sharded plate {inside[0]!r}: its guide "
                    "parameters would be per observation and differ by rank, which averaging gradients "
                    "cannot fit. Data-parallel fit needs latent variables outside the plates over the "
                    "sharded data (name the sharded plates with DataParallel(plates=...) if "
                    f"{inside[0]!r} is not one)"
                )
        mine = {
            "latents": {n: tuple(s) for n, s in latents.items()},
            "observed": {n: _digest(s["value"]) for n, s in observed.items()},
        }
        everyone = self.gather(mine)
        for r, theirs in enumerate(everyone):
            if theirs["latents"] != mine["latents"] or set(theirs["observed"]) != set(observed):
                diff = sorted(set(theirs["latents"].items()) ^ set(mine["latents"].items()))
                raise FitInputError(
                    f"the model has other sites on rank {r} than on rank {self.rank}: latent sites "
                    f"(name, shape) differing: {diff}; observed sites there {sorted(theirs['observed'])}, "
                    f"here {sorted(observed)}. Global latent sites must not depend on the shard"
                )
        for name, site in observed.items():
            values = {theirs["observed"][name] for theirs in everyone}
            sharded = any(f.name in plates for f in site["cond_indep_stack"])
            if not sharded and len(values) > 1:
                raise FitInputError(
                    f"observed site {name!r} has different values on different ranks but lies in no "
                    f"sharded plate (sharded: {sorted(plates)}), so fit cannot tell how its likelihood "
                    "splits: put its observations in a pyro.plate over the sharded dimension, or give "
                    "every rank the same value of the data argument behind it"
                )
            if sharded and self.config.check_data and self.world_size > 1 and len(values) == 1:
                raise FitInputError(
                    f"observed site {name!r} (in the sharded plate(s) "
                    f"{sorted(f.name for f in site['cond_indep_stack'] if f.name in plates)}) holds the "
                    "same values on every rank: shard the data argument behind it with "
                    f"pyro_nf.shard(...), or its likelihood counts {self.world_size} times. If the "
                    "shards really are equal, pass DataParallel(check_data=False)"
                )
        self.plates = frozenset(plates)
        scaler = _ShardScale(self.plates, float(self.world_size))

        @functools.wraps(model)
        def scaled_model(*args: Any, **kwargs: Any) -> Any:
            with scaler:
                return model(*args, **kwargs)

        return scaled_model

    def attach(self, svi: Any, params: dict[str, torch.Tensor], guide: Any) -> Callable[..., float]:
        """Broadcast rank 0's parameters; make ``svi`` average losses and gradients over the ranks;
        return its ``evaluate_loss``, averaged the same way."""
        self.broadcast(params, guide)
        svi.loss_and_grads = self.synced(svi.loss_and_grads, params)
        return self.synced(svi.evaluate_loss)

    def broadcast(self, params: dict[str, torch.Tensor], guide: Any) -> None:
        """Copy rank 0's parameters (and the guide's buffers) to every rank, after checking shapes."""
        tensors = dict(params)
        if isinstance(guide, torch.nn.Module):
            tensors.update({f"buffer {n}": b for n, b in guide.named_buffers()})
        # matched by position, not by name: a guide's parameter prefix (its instance name) may differ
        # between ranks (names are unique among the *live* guides of each process)
        names = list(tensors)
        mine = [(tuple(t.shape), str(t.dtype)) for t in tensors.values()]
        for r, theirs in enumerate(self.gather(mine)):
            theirs = [tuple((tuple(s), d)) for s, d in theirs]
            if theirs != mine:
                bad = [
                    i
                    for i in range(max(len(mine), len(theirs)))
                    if i >= len(mine) or i >= len(theirs) or mine[i] != theirs[i]
                ]
                i = bad[0]
                name = names[min(i, len(names) - 1)]
                raise FitInputError(
                    f"parameters differ between rank {r} and rank {self.rank}: {name!r} is "
                    f"{theirs[i] if i < len(theirs) else 'absent'} there and "
                    f"{mine[i] if i < len(mine) else 'absent'} here "
                    f"({len(bad)} differing). A parameter sized by the local data cannot be replicated"
                )
        with torch.no_grad():
            for t in tensors.values():
                dist.broadcast(t.data, src=self.src, group=self.group)

    def synced(self, fn: Callable, params: dict[str, torch.Tensor] | None = None) -> Callable[..., float]:
        """Wrap ``fn`` (which returns a loss and, with ``params``, leaves their gradients in
        ``.grad``) so that it returns the mean loss of the ranks and leaves the mean gradients.

        The same hook serves Pyro's ``SVI.loss_and_grads``, ``SVI.evaluate_loss`` and any
        "loss, then ``.backward()``" step: call the wrapped function, then the optimiser. An
        exception on one rank is raised on every rank (a divergence as a divergence, so all ranks
        recover together; anything else as a ``RuntimeError`` on the others), never a hang.
        """
        plist = [] if params is None else list({id(p): p for p in params.values()}.values())  # no repeats

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> float:
            caught: Exception | None = None
            try:
                out = fn(*args, **kwargs)
                value = float(out.detach() if isinstance(out, torch.Tensor) else out)
            except Exception as err:  # re-raised below, after the other ranks learn of it
                caught, value = err, math.nan
            return self._reduce(plist, value, caught)

        return run

    def _reduce(self, plist: list[torch.Tensor], value: float, caught: Exception | None) -> float:
        if self.world_size == 1:  # nothing to average
            if caught is not None:
                raise caught
            return value
        div = caught is not None and is_divergence_error(caught)
        meta = [value, float(div), float(caught is not None and not div)]
        meta += [float(p.grad is not None) for p in plist]
        meta_t = torch.tensor(meta, dtype=torch.float64, device=self.device)
        groups: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in plist:
            groups.setdefault(p.dtype, []).append(p)
        flats = {
            dt: torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])
            for dt, ps in groups.items()
        }
        works = [dist.all_reduce(t, group=self.group, async_op=True) for t in [meta_t, *flats.values()]]
        for w in works:
            w.wait()
        loss, n_div, n_err = (float(v) for v in meta_t[:3])
        if n_div or n_err:
            for p in plist:
                p.grad = None
            if n_err:
                if caught is not None and not div:
                    raise caught
                raise RuntimeError(
                    f"{int(n_err)} other rank(s) raised an error in this step (see their output)"
                )
            if caught is not None:
                raise caught
            raise ValueError(
                f"the loss was nan on {int(n_div)} other rank(s): a distribution rejected a value"
            )
        has_grad = meta_t[3:].tolist()
        index = {id(p): i for i, p in enumerate(plist)}
        for dt, ps in groups.items():
            flat = flats[dt].div_(self.world_size)
            offset = 0
            for p in ps:
                chunk = flat[offset : offset + p.numel()]
                offset += p.numel()
                p.grad = chunk.view_as(p) if has_grad[index[id(p)]] > 0 else None
        return loss / self.world_size

    def save_checkpoint(self, path: Any, payload: dict[str, Any]) -> None:
        """Rank 0 writes ``payload`` plus every rank's RNG state; an error there is raised on all."""
        states = self.gather(capture_rng_state())
        message: list[str | None] = [None]
        failure: Exception | None = None
        if self.is_main:
            try:
                save_checkpoint(path, {**payload, "rng_by_rank": states, "world_size": self.world_size})
            except Exception as err:
                message = [f"{type(err).__name__}: {err}"]
                failure = err
        dist.broadcast_object_list(message, src=self.src, group=self.group)
        if message[0] is not None:
            if failure is not None:
                raise failure
            raise CheckpointError(f"rank 0 failed to write checkpoint {str(path)!r}: {message[0]}")
