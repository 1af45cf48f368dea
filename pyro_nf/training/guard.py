r"""The divergence guard of :func:`pyro_nf.fit`: snapshots, roll-back, learning-rate back-off.

Before every step the parameters are copied (one ``clone`` per parameter tensor; the copy is the only
per-step cost). A copy becomes *verified* once the step run with it returns a finite loss. Verified
copies are kept on a ladder: level 0 is the latest one (one step back); level :math:`j \ge 1` takes
over level :math:`j-1`'s copy every :data:`LADDER_PERIODS`\ ``[j-1]`` steps, so it is between about
``8**(j-1)`` and ``8**j`` steps old (no extra copies: the levels share tensors); the last level is the
fit's starting point. The *r*-th recovery (0-based) restores level ``min(r, last)`` (falling back to an
older level where one is not yet filled): 1 step back, then about 8, 64, 512 steps back, then the start.
The optimizer moments are reset and every learning rate multiplied by :data:`RECOVERY_LR_FACTOR`.

Where the parameters are views of one flat buffer (the fused Adam of
:mod:`pyro_nf.training._fused_optim` puts them there), a copy is one flat tensor: one ``clone`` or
``copy_`` per step, one reduction for the finiteness check; checkpoints still hold per-name tensors.

Memory: up to six copies of the parameters can be alive (the candidate, four ladder levels, the
start). Above :data:`COMPACT_BYTES` of parameters (e.g. a flow at D = 5000) the guard is *compact*:
two preallocated buffers, the candidate and the last verified copy, swapped in place each step (no
allocation per step); every recovery then restores the last verified parameters (one step back).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro.optim import PyroOptim

from pyro_nf.training import setup
from pyro_nf.training.errors import FitDivergedError

#: The divergence guard multiplies the learning rate by this factor at every recovery.
RECOVERY_LR_FACTOR = 0.5
#: Steps between promotions of ladder level j-1 to level j (j = 1, 2, 3).
LADDER_PERIODS = (8, 64, 512)

#: Parameter bytes above which the guard keeps two copies instead of the ladder (see module docstring).
COMPACT_BYTES = 32 * 2**20

#: per-name copies, or one flat copy in the order of the guard's ``order``
Snapshot = dict[str, torch.Tensor] | torch.Tensor


def clone(params: dict[str, torch.Tensor]) -> Snapshot:
    """Detached copies of the parameter tensors."""
    return {n: p.detach().clone() for n, p in params.items()}


def restore(params: dict[str, torch.Tensor], snapshot: Snapshot) -> None:
    """Copy a snapshot into the parameters in place (the param store and modules see it)."""
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(snapshot[n])


def all_finite(params: dict[str, torch.Tensor]) -> bool:
    """Whether every parameter entry is finite (one reduction; exact re-check on overflow)."""
    if not params:
        return True
    with torch.no_grad():
        total = sum(p.detach().sum() for p in params.values())
        if bool(torch.isfinite(total)):
            return True
        return all(bool(torch.isfinite(p).all()) for p in params.values())


def current_lr(optim: PyroOptim, default: float) -> float:
    """Learning rate of the first per-parameter optimizer (``default`` before the first step)."""
    for opt in setup.torch_optimizers(optim):
        return float(opt.param_groups[0]["lr"])
    return default


class DivergenceGuard:
    """Snapshot ladder plus the recover-or-raise rule (see the module docstring).

    Args:
        params: the fit's parameters (unconstrained tensors of the param store), by name.
        max_recoveries: recoveries allowed before :class:`FitDivergedError`.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        max_recoveries: int,
        compact_bytes: int | None = None,
        flat: Callable[[], torch.Tensor | None] | None = None,
        order: list[torch.Tensor] | None = None,
    ) -> None:
        self.params, self.max_recoveries = params, max_recoveries
        #: ``flat()``: the parameters' flat buffer (the tensors of ``order``, back to back) or None
        self.flat = flat if flat is not None else (lambda: None)
        self.order = order if order is not None else list({id(p): p for p in params.values()}.values())
        nbytes = sum(p.numel() * p.element_size() for p in params.values())
        #: two swapped buffers instead of the ladder (parameters over ``compact_bytes``)
        self.compact = nbytes > (COMPACT_BYTES if compact_bytes is None else compact_bytes)
        self.initial = clone(params)
        depth = 0 if self.compact else len(LADDER_PERIODS)
        self.levels: list[Snapshot | None] = [self.initial] + [None] * depth
        self.recovery_steps: list[int] = []
        self.candidate: Snapshot | None = None
        self.spare: Snapshot | None = None
        self.last_error: Exception | None = None

    def before_step(self) -> None:
        """Copy the parameters the coming step starts from."""
        flat = self.flat()
        if not self.compact:
            self.candidate = clone(self.params) if flat is None else flat.detach().clone()
            return
        if flat is not None:
            if not isinstance(self.spare, torch.Tensor):
                self.spare = flat.detach().clone()
            else:
                self.spare.copy_(flat.detach())
        elif self.spare is None or isinstance(self.spare, torch.Tensor):
            self.spare = clone(self.params)
        else:
            with torch.no_grad():
                for n, p in self.params.items():
                    self.spare[n].copy_(p)
        self.candidate = self.spare

    def _restore(self, snapshot: Snapshot) -> None:
        if not isinstance(snapshot, torch.Tensor):
            restore(self.params, snapshot)
            return
        flat = self.flat()
        with torch.no_grad():
            if flat is not None:
                flat.copy_(snapshot)
                return
            for p, v in zip(self.order, snapshot.split([p.numel() for p in self.order]), strict=True):
                p.copy_(v.view(p.shape))

    def finite(self) -> bool:
        """Whether every parameter entry is finite (:func:`all_finite`; one reduction when flat)."""
        flat = self.flat()
        if flat is None:
            return all_finite(self.params)
        with torch.no_grad():
            return bool(torch.isfinite(flat.sum())) or bool(torch.isfinite(flat).all())

    def verified(self) -> None:
        """The step just run returned a finite loss: its starting parameters are good."""
        if self.compact:  # swap: the old verified copy becomes the next candidate's buffer
            if self.candidate is not self.levels[0]:
                self.spare, self.levels[0] = self.levels[0], self.candidate
            self.initial = self.levels[0]
            return
        self.levels[0] = self.candidate

    def completed(self, step: int) -> None:
        """Step ``step`` (1-based count) finished with finite loss and parameters: promote levels."""
        for j in range(len(self.levels) - 1, 0, -1):
            if step % LADDER_PERIODS[j - 1] == 0 and self.levels[j - 1] is not None:
                self.levels[j] = self.levels[j - 1]

    def undo_step(self) -> None:
        """Put back the parameters the current step started from (KeyboardInterrupt)."""
        self._restore(self.candidate)

    def recover(
        self,
        step: int,
        optim: PyroOptim,
        lr: float,
        model: Callable,
        guide: Callable,
        args: tuple,
        kwargs: dict,
    ) -> None:
        """Roll back and lower the learning rate, or raise :class:`FitDivergedError`."""
        r = len(self.recovery_steps)
        cur_lr = current_lr(optim, lr)
        if r >= self.max_recoveries:
            bad_params, sites = setup.diagnose_nonfinite(model, guide, args, kwargs, self.params)
            self._restore(self.levels[0])
            where = (
                f"sites with non-finite draws or log densities: {sites}"
                if sites
                else "no site had non-finite draws when re-run (the loss itself overflowed)"
            )
            raise FitDivergedError(
                f"SVI diverged at step {step} with learning rate {cur_lr:.3g} after {r} "
                f"recoveries (max_recoveries={self.max_recoveries}); {where}; non-finite "
                f"parameters: {bad_params or 'none'}. The guide holds the last verified "
                "parameters. Try a lower lr, optimizer='clipped_adam', a better-scaled (e.g. "
                "non-centred) model, or a larger max_recoveries.",
                step=step,
                lr=cur_lr,
                sites=sites,
                params=bad_params,
            ) from self.last_error
        level = min(r, len(self.levels))
        target = (
            self.initial
            if level == len(self.levels)
            else next((s for s in self.levels[level:] if s is not None), self.initial)
        )
        self._restore(target)
        for j in range(min(level, len(self.levels))):
            self.levels[j] = target
        for opt in setup.torch_optimizers(optim):
            opt.state.clear()  # Adam moments from the diverging trajectory would push it back
            for group in opt.param_groups:
                group["lr"] *= RECOVERY_LR_FACTOR
        self.recovery_steps.append(step)

    def final_check(self, loss: float, step: int) -> None:
        """The last update has no loss yet: if its check loss is non-finite, restore level 0."""
        if not (math.isfinite(loss) and self.finite()):
            self._restore(self.levels[0])
            self.recovery_steps.append(step)

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state for checkpoints (shared snapshots are saved once by torch.save)."""
        named: dict[int, dict[str, torch.Tensor]] = {}  # flat copies as per-name views, shared ones once

        def by_name(snap: Snapshot | None) -> dict[str, torch.Tensor] | None:
            if not isinstance(snap, torch.Tensor):
                return snap
            if id(snap) not in named:
                views = snap.split([p.numel() for p in self.order])
                index = {id(p): i for i, p in enumerate(self.order)}
                named[id(snap)] = {n: views[index[id(p)]].view(p.shape) for n, p in self.params.items()}
            return named[id(snap)]

        return {
            "initial": by_name(self.initial),
            "levels": [by_name(s) for s in self.levels],
            "recovery_steps": list(self.recovery_steps),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output, checking the snapshot names match the parameters."""
        for snap in [state["initial"], *state["levels"]]:
            if snap is not None and set(snap) != set(self.params):
                raise ValueError("guard snapshots are for other parameters")
        self.initial = state["initial"]
        levels = list(state["levels"])
        if self.compact:  # keep the newest verified copy only
            self.initial = levels[0] if levels[0] is not None else self.initial
            levels = [self.initial]
            self.spare = None
        else:
            levels += [None] * (1 + len(LADDER_PERIODS) - len(levels))
        self.levels = levels
        self.recovery_steps = [int(s) for s in state["recovery_steps"]]
