r"""The fast ELBO's loss and gradients traced once into a graph of tensor operations, then replayed.

One fast-path step (:mod:`pyro_nf.training.fast_elbo`) computes the loss through Python objects: the
guide's distributions and flow layers, Pyro's handlers around the model, the log densities of
``torch.distributions``; then autograd walks the recorded graph backwards. At small and moderate
:math:`D` that Python and bookkeeping, not arithmetic, is most of the step. For a model with static
structure the *sequence of tensor operations* of a step is the same at every step, only the values
differ, so it is recorded once, forward and backward together, with ``torch.fx``'s ``make_fx`` (real
tensors, no fake-tensor or functionalisation passes), and each later step runs that sequence: the
same ATen kernels on the same inputs in the same order, with the random draws (``normal_``,
``randperm`` of subsampled plates) taken from the global generator at the same points. Loss and
gradients are therefore bit-identical to the traced step's eager computation, and the random stream
is consumed exactly as before; this is checked at set-up (see below), never assumed.

The recording is used only where it is sound, otherwise the eager step runs, and
:attr:`ReplayedGradient.reason` says why:

- the step must not read a tensor's value into Python (``.item()``, ``bool(t)``): that would
  bake a data-dependent branch into the graph (``make_fx`` refuses it);
- after tracing, one eager step and one replayed step are run from the same torch RNG state and
  must give bit-identical losses and gradients; Python's and NumPy's generators are not reset in
  between, so a model that draws from them (values the trace froze) fails this check, as does one
  whose operations differ between runs (all generators are restored afterwards);
- no constant of the graph may be a parameter or a value computed from one before the step (it
  would not follow the parameters' updates);
- steps of more than about :data:`MAX_NODES` operations (twice the forward pass's, counted
  before tracing; e.g. MAF's :math:`D` sequential passes at large :math:`D`) are not replayed: their
  tracing would cost more than the fit saves.

The graph is traced again when the guide's sticking-the-landing flag changes (``fit(stl_after=)``),
the only structural change a fit makes mid-way. Tracing costs a few hundred eager steps' worth of
time, so :func:`pyro_nf.fit` replays only fits of at least :data:`MIN_STEPS` steps (and
:data:`MIN_BUDGET` seconds, under a time budget) on one process (:func:`worthwhile`); data-parallel
and short fits run eagerly.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro_nf.guides import AutoIAF
    >>> from pyro_nf.training.fast_elbo import plan
    >>> def model():
    ...     pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    >>> guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
    >>> _ = guide()
    >>> fast, _ = plan(model, guide, (), {})
    >>> params = [p for _, p in pyro.get_param_store().named_parameters()]
    >>> step = ReplayedGradient(fast, params)
    >>> loss = step()  # traces, checks, replays
    >>> step.replaying, step.reason
    (True, '')
    >>> all(p.grad is not None for p in params)
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_nf._util import isolated_rng
from pyro_nf.training._graph_exec import compile_graph, drop_traced_values

__all__ = [
    "MAX_NODES",
    "MIN_BUDGET",
    "MIN_STEPS",
    "ReplayedGradient",
    "describe",
    "progress_note",
    "worthwhile",
]

#: :func:`pyro_nf.fit` replays fits of at least this many remaining steps (tracing pays back).
MIN_STEPS: int = 1000
#: ... and, under a ``time_budget``, a budget of at least this many seconds.
MIN_BUDGET: float = 30.0
#: Graphs with more operations than this run eagerly (tracing and code generation grow with them).
MAX_NODES: int = 5_000

#: ATen operations that read a tensor's value into Python: a branch on it would be frozen.
_VALUE_READS = ("_local_scalar_dense", "aten.item", "is_nonzero", "equal.default")


class _CountOps(TorchDispatchMode):
    """Counts the ATen operations run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def worthwhile(num_steps: int, time_budget: float | None) -> bool:
    """Whether a fit of ``num_steps`` steps (under ``time_budget`` seconds, if set) replays its step:
    at least :data:`MIN_STEPS` steps and :data:`MIN_BUDGET` seconds, so that tracing (a few hundred
    eager steps' time) pays back."""
    return num_steps >= MIN_STEPS and (time_budget is None or time_budget >= MIN_BUDGET)


def describe(step: Any) -> str:
    """What :func:`pyro_nf.fit` reports as ``FitResult.replay`` for its step function ``step`` (its state
    at the end of the fit)."""
    if not isinstance(step, ReplayedGradient):
        return ""
    if step.replaying:
        return f"replayed ({step.num_traces} trace(s), {step.trace_seconds:.1f} s)"
    return f"eager ({step.reason})" if step.reason else "eager"


def progress_note(step: Any, path: str, distributed: bool) -> str:
    """How a fit's fast step runs, for its progress output: :func:`describe`, or why it is not replayed."""
    if path != "fast":
        return ""
    if isinstance(step, ReplayedGradient):
        return describe(step)
    why = "data-parallel fits are" if distributed else f"fits under {MIN_STEPS} steps / {MIN_BUDGET:g} s are"
    return f"eager ({why} not replayed)"


def _torch_rng_state() -> tuple:
    cuda = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    return torch.get_rng_state(), cuda


def _set_torch_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _default_key(fast: Any) -> Hashable:
    guide = fast.guide
    return (getattr(guide, "stl", None), id(getattr(guide, "whiten", None)))


class ReplayedGradient:
    """``loss = fast.differentiable_loss(); loss.backward()``, from a recorded operation graph.

    Call it once per step: it returns the loss as a float and leaves the gradients in the
    parameters' ``.grad`` (added to any already there), as the eager step does.

    Args:
        fast: a :class:`~pyro_nf.training.fast_elbo.FastELBO`.
        params: every parameter the loss depends on (no duplicates).
        key: a function whose value changes when the step's structure may change (default: the
            guide's ``stl`` flag and its whitening map); a new value means a new trace.
    """

    def __init__(
        self, fast: Any, params: list[torch.Tensor], key: Callable[[], Hashable] | None = None
    ) -> None:
        self.fast, self.params = fast, list(params)
        self.key = key if key is not None else (lambda: _default_key(fast))
        self.graph: torch.fx.GraphModule | None = None
        #: the graph as one Python function (:mod:`pyro_nf.training._graph_exec`), what each step runs
        self.run: Callable[..., tuple] | None = None
        #: nodes of the recorded graph that the compiled function skips (exact no-ops, dead code)
        self.removed = 0
        self.graph_key: Hashable = None
        self.refused: dict[Hashable, str] = {}
        #: why the current structure runs eagerly ('' while replaying)
        self.reason = ""
        #: seconds spent tracing and checking, over all traces
        self.trace_seconds = 0.0
        self.num_traces = 0

    @property
    def replaying(self) -> bool:
        """Whether the last step was replayed."""
        return self.graph is not None and not self.reason

    def _eager(self) -> tuple[torch.Tensor, tuple]:
        loss = self.fast.differentiable_loss()
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return loss.detach(), grads

    def _trace(self) -> tuple[torch.fx.GraphModule | None, str]:
        def joint(*_params: torch.Tensor) -> tuple:
            loss, grads = self._eager()
            return (loss, *grads)

        with isolated_rng():
            return self._trace_and_check(joint)

    def _trace_and_check(self, joint: Callable[..., tuple]) -> tuple[torch.fx.GraphModule | None, str]:
        """Count, trace, then compare one eager and one replayed step from the same *torch* RNG
        state; Python's and NumPy's generators run on between the trace and the reference, so
        draws from them (frozen into the graph) show up as a difference."""
        start = _torch_rng_state()
        counter = _CountOps()
        with counter, torch.no_grad():
            self.fast.differentiable_loss()  # the size of the forward pass (backward: about as many)
        if 2 * counter.count > MAX_NODES:
            return None, f"about {2 * counter.count} operations per step (> MAX_NODES = {MAX_NODES})"
        _set_torch_rng_state(start)
        try:
            graph = make_fx(joint, tracing_mode="real")(*self.params)
        except Exception as err:  # anything make_fx cannot record (e.g. a read of a value): run eagerly
            return None, f"not traceable ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
        try:
            return self._check(graph, joint, start)
        finally:
            drop_traced_values(graph.graph)

    def _check(self, graph: torch.fx.GraphModule, joint: Callable[..., tuple], start: tuple) -> tuple:
        """The refusals after tracing, then the eager-against-replayed comparison (module docstring)."""
        nodes = list(graph.graph.nodes)
        reads = sorted({str(n.target) for n in nodes if any(r in str(n.target) for r in _VALUE_READS)})
        if reads:
            return None, f"the step reads tensor values into Python ({reads[0]})"
        owned = {p.untyped_storage().data_ptr() for p in self.params}
        for node in nodes:
            const = getattr(graph, node.target) if node.op == "get_attr" else None
            if isinstance(const, torch.Tensor) and (
                const.requires_grad or const.untyped_storage().data_ptr() in owned
            ):
                return None, f"a parameter-derived value is computed outside the step ({node.target})"
        run, self.removed = compile_graph(graph)
        _set_torch_rng_state(start)
        reference = joint()
        _set_torch_rng_state(start)
        with torch.no_grad():
            replayed = run(*self.params)
        for a, b in zip(reference, replayed, strict=True):
            if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
                if a is not None and b is not None and torch.isnan(a).any() and torch.isnan(b).any():
                    continue  # nan != nan: the guard handles a non-finite step either way
                return None, "a replayed step differs from the eager one (randomness outside torch?)"
        self.run = run
        return graph, ""

    def _prepare(self, key: Hashable) -> None:
        self.graph, self.graph_key = None, key
        if key in self.refused:
            self.reason = self.refused[key]
            return
        t0 = time.perf_counter()
        graph, reason = self._trace()
        self.trace_seconds += time.perf_counter() - t0
        self.num_traces += 1
        self.graph, self.reason = graph, reason
        if reason:
            self.refused[key] = reason

    def __call__(self) -> float:
        key = self.key()
        if key != self.graph_key or (self.graph is None and not self.reason):
            self._prepare(key)
        if self.graph is None:
            loss = self.fast.differentiable_loss()
            loss.backward()
            return float(loss.detach())
        with torch.no_grad():
            loss, *grads = self.run(*self.params)
            for p, g in zip(self.params, grads, strict=True):
                if g is None:
                    continue
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad += g
        return float(loss)
