"""Load a model for ``pyro-nf``: a built-in example, or ``path/to/file.py:model_fn`` plus data.

Every problem with the user's input raises :class:`InputError` with a one-line message; the command
prints it and exits with status 2.

Example:
    >>> spec = load_model("funnel")  # doctest: +SKIP
    >>> spec.name, sorted(spec.data)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine

from pyro_nf._sites import is_latent

__all__ = ["InputError", "ModelSpec", "check_model", "load_data", "load_model"]


class InputError(Exception):
    """A user input (model, data, option) the command cannot use; the message is one line."""


@dataclass
class ModelSpec:
    """A model ready to fit: ``model(**data)``; ``example`` is the built-in example, if any."""

    name: str
    model: Callable
    data: dict[str, Any] = field(default_factory=dict)
    example: Any = None


def _import_file(path: Path) -> Any:
    module_name = f"_pyro_nf_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[module_name]
        raise InputError(f"cannot import {path}: syntax error on line {e.lineno}: {e.msg}") from e
    except Exception as e:  # a user's module may raise anything at import time
        del sys.modules[module_name]
        raise InputError(f"cannot import {path}: {type(e).__name__}: {_one_line(e)}") from e
    return module


def _one_line(e: BaseException) -> str:
    """An exception's message on one line, without the trace-shape table Pyro appends."""
    text = " ".join(str(e).split("Trace Shapes:")[0].split()) or type(e).__name__
    return text[:300] + ("..." if len(text) > 300 else "")


def load_model(spec: str, data_path: str | None = None) -> ModelSpec:
    """Resolve ``spec``: a built-in example, or ``path/to/file.py:model_fn`` with ``data_path``.

    Built-in examples come with their data; ``--data`` replaces or adds keyword arguments by name.

    Raises:
        InputError: no such example or file, import error, no such function, not callable, bad data.
    """
    from pyro_nf.examples import available_examples, get_example

    data = load_data(data_path) if data_path else {}
    if ":" not in spec:
        examples = available_examples()
        if spec not in examples:
            hint = " (add :model_fn to name the function)" if spec.endswith(".py") else ""
            raise InputError(
                f"unknown model {spec!r}: not a built-in example "
                f"({', '.join(examples)}) nor path/to/file.py:model_fn{hint}"
            )
        ex = get_example(spec)
        return ModelSpec(spec, ex.model, {**ex.data, **data}, ex)
    path_text, _, fn_name = spec.rpartition(":")
    path = Path(path_text)
    if not fn_name.isidentifier():
        raise InputError(f"bad model spec {spec!r}: expected path/to/file.py:model_fn")
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    if path.suffix != ".py":
        raise InputError(f"model file {path} is not a .py file")
    module = _import_file(path)
    if not hasattr(module, fn_name):
        found = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__
        )
        raise InputError(
            f"{path} has no function {fn_name!r}" + (f" (functions: {', '.join(found)})" if found else "")
        )
    model = getattr(module, fn_name)
    if not callable(model):
        raise InputError(f"{path}:{fn_name} is a {type(model).__name__}, not a function")
    return ModelSpec(f"{path.stem}:{fn_name}", model, data)


def _to_tensor(name: str, values: np.ndarray) -> torch.Tensor:
    if values.dtype == bool:
        return torch.as_tensor(values.astype(np.float64), dtype=torch.get_default_dtype())
    if np.issubdtype(values.dtype, np.integer):
        return torch.as_tensor(values.astype(np.int64))
    if np.issubdtype(values.dtype, np.floating):
        if np.isnan(values).any():
            raise InputError(f"data {name!r} has {int(np.isnan(values).sum())} NaN value(s)")
        if np.isinf(values).any():
            raise InputError(f"data {name!r} has {int(np.isinf(values).sum())} infinite value(s)")
        return torch.as_tensor(values, dtype=torch.get_default_dtype())
    raise InputError(f"data {name!r} is not numeric (dtype {values.dtype})")


def load_data(path: str | Path) -> dict[str, torch.Tensor]:
    """Read model keyword arguments from a ``.csv`` (one float tensor per column) or ``.npz`` file.

    CSV columns become float tensors of torch's default dtype (cast index columns with ``.long()``
    in the model); npz arrays keep integer dtypes as ``int64``, floats become the default dtype.

    Raises:
        InputError: missing file, unknown suffix, unreadable content, non-numeric column or array.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
            raise InputError(f"cannot read data {path}: {_one_line(e)}") from e
        if frame.empty:
            raise InputError(f"data file {path} has no rows")
        out = {}
        for col in frame.columns:
            values = frame[col].to_numpy()
            if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
                raise InputError(f"cannot read data {path}: column {col!r} is not numeric")
            if frame[col].isna().any():
                raise InputError(f"cannot read data {path}: column {col!r} has missing values")
            if np.isinf(values.astype(np.float64)).any():
                raise InputError(f"cannot read data {path}: column {col!r} has infinite values")
            out[str(col)] = torch.as_tensor(values.astype(np.float64), dtype=torch.get_default_dtype())
        return out
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise InputError(f"cannot read data {path}: {_one_line(e)}") from e
        if not arrays:
            raise InputError(f"data file {path} holds no arrays")
        return {k: _to_tensor(k, v) for k, v in arrays.items()}
    raise InputError(f"data file {path} must be .csv or .npz, not {suffix or 'no suffix'!r}")


def check_model(model: Callable, data: dict[str, Any], name: str = "model") -> None:
    """Check that ``model(**data)`` binds and runs as a Pyro model with at least one latent site.

    Raises:
        InputError: unknown or missing arguments, the call fails, or no latent site is recorded.
    """
    try:
        sig = inspect.signature(model)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} is not a Pyro model: cannot read its signature") from e
    try:
        sig.bind(**data)
    except TypeError as e:
        params = sig.parameters.values()
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = [] if takes_any else sorted(set(data) - named)
        missing = [
            p.name
            for p in params
            if p.default is p.empty
            and p.name not in data
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)
        ]
        parts = ([f"unknown argument(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing argument(s) {', '.join(missing)}"] if missing else []
        )
        detail = "; ".join(parts) or _one_line(e)
        raise InputError(f"data does not fit {name}{sig}: {detail}") from e
    try:
        with poutine.block():
            trace = poutine.trace(model).get_trace(**data)
    except Exception as e:  # the user's model may raise anything on bad data
        raise InputError(f"calling {name} on the data failed: {type(e).__name__}: {_one_line(e)}") from e
    latent = [n for n, s in trace.nodes.items() if is_latent(s)]
    if not latent:
        raise InputError(f"{name} is not a Pyro model: calling it records no latent pyro.sample site")
