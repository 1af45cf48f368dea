"""One small registry type for every name -> factory table of pyro_nf (transforms, guides, examples).

All three behave alike: names in registration order, :class:`ValueError` for a duplicate or unknown
name (the message lists the known ones), ``register`` usable as a decorator or a call.

Example:
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def _square(side):
    ...     return side * side
    >>> shapes.make("square", 3), shapes.names()
    (9, ['square'])
    >>> shapes.make("circle", 1)
    Traceback (most recent call last):
    ...
    ValueError: unknown shape 'circle'; known: square
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Registry"]


class Registry(Generic[F]):
    """Name -> factory table; ``kind`` names what it holds in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, F] = {}

    def register(self, name: str, factory: F | None = None) -> Any:
        """Register ``factory`` under ``name``; without ``factory``, return a decorator."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorate(fn: F) -> F:
            if name in self._factories:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._factories[name] = fn
            return fn

        return decorate if factory is None else decorate(factory)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. a test's temporary entry)."""
        self.get(name)
        del self._factories[name]

    def get(self, name: str) -> F:
        """The factory registered under ``name``."""
        if not isinstance(name, str) or name not in self._factories:
            self.check([name])
        return self._factories[name]

    def check(self, names: Iterable[str]) -> list[str]:
        """``list(names)`` if every name is registered, else one ``ValueError`` naming all unknown ones."""
        names = list(names)
        unknown = [n for n in names if n not in self._factories]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            shown = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown {self.kind}{plural} {shown}; known: {', '.join(self._factories)}")
        return names

    def make(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``name``."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._factories))
