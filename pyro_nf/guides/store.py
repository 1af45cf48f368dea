r"""Each guide owns its parameters in Pyro's global param store.

Pyro's ``PyroModule`` keeps a module's parameters in the global param store under
``<_pyro_name>.<attribute>`` and treats the store as the source of truth: two guides with one name
share (and silently overwrite) each other's tensors. pyro_nf guides therefore

1. take a name no *live* pyro_nf guide holds: the class name, else ``<class>_1``, ``<class>_2``, ...
   (:func:`claim_name`, at construction);
2. at set-up, take the store entries already under their prefix out of the store
   (:func:`take_entries`): entries a live guide owns are an error; others were loaded
   (``pyro.get_param_store().load``) or left by a guide that no longer exists. A fresh guide adopts
   them when every name and shape matches its own parameters, with a warning (Pyro's param-store
   save/load route, flows included), and raises naming the first mismatch otherwise
   (:func:`adopt_entries`). A guide loaded with ``load_state_dict`` keeps the loaded values.

Example:
    >>> import pyro, pyro.distributions as dist
    >>> from pyro_nf import AutoIAF
    >>> def model():
    ...     pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    >>> a, b = AutoIAF(model, num_flows=1), AutoIAF(model, num_flows=1)
    >>> a._pyro_name, b._pyro_name
    ('AutoIAF', 'AutoIAF_1')
"""

from __future__ import annotations

import gc
import warnings
import weakref
from typing import Any

import pyro
import torch
from pyro.nn import PyroModule
from pyro.params.param_store import param_with_module_name

__all__ = ["adopt_entries", "claim_name", "claim_unused_name", "store_names", "take_entries"]

_LIVE: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def _holder(name: str, guide: Any) -> Any:
    other = _LIVE.get(name)
    return other if other is not None and other is not guide else None


def claim_name(guide: Any, base: str) -> str:
    """A ``_pyro_name`` for ``guide`` that no other live pyro_nf guide holds (``base`` if free)."""
    if _holder(base, guide) is not None:
        gc.collect()  # a guide that is unreachable but not yet collected should not hold its name
    name, k = base, 0
    while _holder(name, guide) is not None:
        k += 1
        name = f"{base}_{k}"
    _LIVE[name] = guide
    return name


def _make_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def store_names(module: PyroModule) -> dict[str, torch.Tensor]:
    """Param-store name -> (unconstrained) tensor of every parameter ``module`` registers."""
    out: dict[str, torch.Tensor] = {}
    for mod in module.modules():
        if not isinstance(mod, PyroModule):
            continue
        pyro_params = mod.__dict__.get("_pyro_params", {})
        for pname, p in mod._parameters.items():
            if p is None:
                continue
            base = pname[: -len("_unconstrained")] if pname.endswith("_unconstrained") else pname
            out[_make_name(mod._pyro_name, base if base in pyro_params else pname)] = p
        for cname, child in mod._modules.items():
            if child is not None and not isinstance(child, PyroModule):
                full = _make_name(mod._pyro_name, cname)
                for sub, p in child.named_parameters():
                    out[param_with_module_name(full, sub)] = p
    return out


def take_entries(guide: PyroModule) -> dict[str, tuple[torch.Tensor, Any]]:
    """Remove and return the store entries under ``guide``'s name prefix (name -> (value, constraint)).

    Raises:
        ValueError: an entry is a parameter of another live pyro_nf guide (a name collision).
    """
    store = pyro.get_param_store()
    prefix = guide._pyro_name + "."
    names = [n for n in store.keys() if n.startswith(prefix) or n.startswith(guide._pyro_name + "$$$")]
    if not names:
        return {}
    owned = {id(p): g for g in list(_LIVE.values()) if g is not guide for p in g.parameters()}
    for n in names:
        other = owned.get(id(store._params[n]))
        if other is not None:
            raise ValueError(
                f"{type(guide).__name__}: Pyro's param store entry {n!r} belongs to another live guide "
                f"({type(other).__name__} {other._pyro_name!r}); two guides must not share a name"
            )
    taken = {}
    for n in names:
        taken[n] = (store._params[n], store._constraints[n])
        del store[n]
    return taken


def restore_entries(entries: dict[str, tuple[torch.Tensor, Any]]) -> None:
    """Put entries removed by :func:`take_entries` back into the store."""
    store = pyro.get_param_store()
    for n, (value, constraint) in entries.items():
        store._params[n] = value
        store._constraints[n] = constraint
        store._param_to_name[value] = n


def adopt_entries(guide: PyroModule, entries: dict[str, tuple[torch.Tensor, Any]]) -> None:
    """Copy store entries found at set-up into ``guide``'s fresh parameters, or raise on a mismatch.

    Raises:
        ValueError: an entry has no counterpart in this guide or another shape; the entries are
            put back into the store.
    """
    if not entries:
        return
    mine = store_names(guide)
    problems = [
        f"{n!r} {tuple(v.shape)} (this guide: {tuple(mine[n].shape) if n in mine else 'no such parameter'})"
        for n, (v, _) in entries.items()
        if n not in mine or mine[n].shape != v.shape
    ]
    if problems:
        restore_entries(entries)
        raise ValueError(
            f"{type(guide).__name__}: Pyro's param store already holds parameters under "
            f"{guide._pyro_name!r} that do not fit this guide (loaded from a file or left by an "
            f"earlier guide): {'; '.join(problems[:3])}. Call pyro.clear_param_store() before "
            "building the guide, or build the guide these parameters came from"
        )
    with torch.no_grad():
        for n, (v, _) in entries.items():
            mine[n].copy_(v.to(dtype=mine[n].dtype, device=mine[n].device))
    warnings.warn(
        f"{type(guide).__name__} {guide._pyro_name!r}: initialised from {len(entries)} parameter(s) "
        "already in Pyro's param store (loaded with pyro.get_param_store().load, or left by an earlier "
        "guide); call pyro.clear_param_store() before building the guide to start fresh",
        UserWarning,
        stacklevel=4,
    )


def claim_unused_name(guide: Any) -> str:
    """Rename a never-called ``guide`` so that neither a live guide nor any entry in the param store
    uses its name (for guides built internally, e.g. by :func:`pyro_nf.compare`)."""
    store_prefixes = {n.split("$$$")[0].split(".")[0] for n in pyro.get_param_store().keys()}
    base = type(guide).__name__
    name, k = base, 0
    while name in store_prefixes or _holder(name, guide) is not None:
        k += 1
        name = f"{base}_{k}"
    if _LIVE.get(guide._pyro_name) is guide:
        del _LIVE[guide._pyro_name]
    guide._pyro_name = name
    _LIVE[name] = guide
    return name
