r"""A recorded ATen graph (``make_fx``'s ``GraphModule``) as one plain Python function, with its no-op
nodes removed: what :class:`pyro_nf.training.replay.ReplayedGradient` runs at every step.

A ``GraphModule``'s generated code calls each operation as ``torch.ops.aten.mul.Tensor(...)``: four
attribute look-ups and the ``OpOverload.__call__`` frame before the kernel, about 0.8 µs of Python per
operation, which at a few hundred operations per step is a sizeable part of a small model's step.
:func:`compile_graph` emits the same calls in the same order against the operations' C++ entry points
(``OpOverload._op``) bound as globals, freeing each intermediate after its last use as fx does. Before
that, nodes whose result equals their input exactly are bypassed (their users read the input):
``detach`` / ``alias`` (in a replay without autograd they only make a new handle), ``t(t(x))``,
``neg(neg(x))``, ``div(x, 1)`` and ``pow(x, 1)``, ``mul(x, 1)``, where the input has the result's dtype and
shape and no in-place operation touches either; unused results of operations without side effects
are dropped (random draws, in-place and ``out=`` operations are always kept, so the random stream is
consumed as before). Every kernel that still runs gets the same inputs as in the recorded graph, so the
outputs are the same bits; the replay's set-up check compares them with an eager step anyway.

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> def f(x):
    ...     return (x.detach() / 1).t().t() * torch.randn(2, 3)
    >>> graph = make_fx(f)(torch.ones(2, 3))
    >>> run, removed = compile_graph(graph)
    >>> removed  # detach, div by 1, t(t(.)): the draw and the product remain
    4
    >>> _ = torch.manual_seed(0); a = graph(torch.ones(2, 3))
    >>> _ = torch.manual_seed(0); b = run(torch.ones(2, 3))
    >>> torch.equal(a, b)
    True
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

__all__ = ["compile_graph", "drop_traced_values"]

_aten = torch.ops.aten
#: single-input operations whose result has its input's values (for a replay without autograd)
_IDENTITY = {_aten.detach.default, _aten.alias.default}
#: (operation, the argument value that makes it the identity on its first argument)
_UNIT = {
    _aten.div.Tensor: 1,
    _aten.div.Scalar: 1,
    _aten.mul.Tensor: 1,
    _aten.mul.Scalar: 1,
    _aten.pow.Tensor_Scalar: 1,
}
_INVOLUTIONS = {_aten.t.default, _aten.neg.default}


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def _same_meta(a: fx.Node, b: fx.Node) -> bool:
    va, vb = _val(a), _val(b)
    return (
        isinstance(va, torch.Tensor)
        and isinstance(vb, torch.Tensor)
        and va.dtype == vb.dtype
        and va.shape == vb.shape
        and va.device == vb.device
    )


def _mutates(node: fx.Node) -> bool:
    target = node.target
    schema = getattr(target, "_schema", None)
    if schema is None:
        return node.op == "call_function" and target is not operator.getitem
    return schema.is_mutable


def _source(node: fx.Node) -> fx.Node | None:
    """The node whose value ``node``'s result equals exactly, or ``None``."""
    target, args = node.target, node.args
    if node.kwargs or not args or not isinstance(args[0], fx.Node):
        return None
    if target in _IDENTITY and len(args) == 1:
        return args[0]
    if target in _UNIT and len(args) == 2 and not isinstance(args[1], fx.Node):
        unit = args[1]
        if isinstance(unit, bool) or unit != _UNIT[target]:
            return None
        return args[0] if _same_meta(args[0], node) else None
    if target in _INVOLUTIONS and len(args) == 1:
        inner = args[0]
        if inner.op == "call_function" and inner.target is target and isinstance(inner.args[0], fx.Node):
            return inner.args[0] if _same_meta(inner.args[0], node) else None
    return None


def _simplify(graph: fx.Graph) -> int:
    """Bypass exact no-ops and drop unused side-effect-free nodes; returns how many were removed."""
    calls = [n for n in graph.nodes if n.op == "call_function"]
    # in-place operations other than a fresh buffer's draw: aliasing matters, only drop dead code
    mutated = any(_mutates(n) and n.target is not _aten.normal_.default for n in calls)
    before = len(graph.nodes)
    if not mutated:
        for node in list(graph.nodes):
            if node.op != "call_function":
                continue
            src = _source(node)
            while src is not None and src.op == "call_function" and _source(src) is not None:
                src = _source(src)
            if src is not None:
                node.replace_all_uses_with(src)
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and not node.users and not _mutates(node):
            node.meta.clear()  # an erased node lingers in reference cycles: drop its traced value now
            graph.erase_node(node)
    return before - len(graph.nodes)


def _literal(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return True
    return isinstance(value, float) and math.isfinite(value)


def compile_graph(module: fx.GraphModule) -> tuple[Callable[..., Any], int]:
    """``(run, removed)``: ``run(*inputs)`` computes what ``module(*inputs)`` computes, kernel for
    kernel (see the module docstring); ``removed`` is the number of nodes simplified away."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in module.graph.nodes:  # a copy: the recorded module stays as it was
        env[node] = graph.node_copy(node, lambda n: env[n])
    removed = _simplify(graph)
    nodes = list(graph.nodes)
    names: dict[fx.Node, str] = {}
    scope: dict[str, Any] = {}
    params: list[str] = []
    last_use: dict[fx.Node, int] = {}
    for i, node in enumerate(nodes):
        for arg in node.all_input_nodes:
            last_use[arg] = i

    def const(value: Any) -> str:
        name = f"_c{len(scope)}"
        scope[name] = value
        return name

    def fmt(arg: Any) -> str:
        if isinstance(arg, fx.Node):
            return names[arg]
        if isinstance(arg, list | tuple):
            inner = ", ".join(fmt(a) for a in arg)
            return f"[{inner}]" if isinstance(arg, list) else f"({inner}{',' if len(arg) == 1 else ''})"
        return repr(arg) if _literal(arg) else const(arg)

    body: list[str] = []
    for i, node in enumerate(nodes):
        name = names[node] = f"v{i}"
        if node.op == "placeholder":
            params.append(name)
            continue
        if node.op == "get_attr":
            scope[name] = getattr(module, node.target)
            names[node] = name
            continue
        if node.op == "output":
            body.append(f"    return {fmt(node.args[0])}")
            break
        if node.op != "call_function":
            raise ValueError(f"cannot compile a {node.op!r} node ({node.target})")
        target = node.target
        fn = const(target._op if isinstance(target, torch._ops.OpOverload) else target)
        call = ", ".join([fmt(a) for a in node.args] + [f"{k}={fmt(v)}" for k, v in node.kwargs.items()])
        body.append(f"    {name} = {fn}({call})")
        dead = [names[a] for a in node.all_input_nodes if last_use.get(a) == i and a.op != "get_attr"]
        if dead:
            body.append(f"    del {', '.join(dead)}")
    src = f"def run({', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(compile(src, "<pyro_nf replayed step>", "exec"), scope)  # noqa: S102 - code generated above
    drop_traced_values(graph)
    return scope["run"], removed


def drop_traced_values(graph: fx.Graph) -> None:
    """Forget the tensors ``make_fx`` keeps in each node's ``meta`` (every intermediate of the traced
    step, weight-sized ones included; fx graphs are reference cycles, so they would otherwise outlive
    the fit until Python's cyclic collector runs)."""
    for node in graph.nodes:
        node.meta.pop("val", None)
        node.meta.pop("tensor_meta", None)
