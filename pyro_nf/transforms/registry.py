"""Registry of flow layers: name -> ``factory(input_dim, **cfg) -> FlowTransform``.

Tests parametrise over :func:`available_transforms`, so a newly registered layer is checked
against autograd automatically.
"""

from __future__ import annotations

from collections.abc import Callable

from .actnorm import ActNorm, Scale
from .autoregressive import AffineAutoregressive
from .base import FlowTransform
from .coupling import AdditiveCoupling, AffineCoupling
from .linear import LULinear
from .permute import Permute
from .planar import Planar
from .spline import SplineAutoregressive, SplineCoupling

TransformFactory = Callable[..., FlowTransform]
_TRANSFORMS: dict[str, TransformFactory] = {}


def register_transform(name: str) -> Callable[[TransformFactory], TransformFactory]:
    """Decorator registering ``factory(input_dim, **cfg)`` under ``name``.

    Example:
        >>> @register_transform("my_planar")
        ... def _make(input_dim, **cfg):
        ...     return Planar(input_dim, **cfg)
    """
    def decorate(factory: TransformFactory) -> TransformFactory:
        if name in _TRANSFORMS:
            raise ValueError(f"a transform named {name!r} is already registered")
        _TRANSFORMS[name] = factory
        return factory
    return decorate


def make_transform(name: str, input_dim: int, **cfg: object) -> FlowTransform:
    """Build the registered layer ``name`` on ``input_dim`` variables."""
    try:
        factory = _TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown transform {name!r}; known: "
                         f"{', '.join(sorted(_TRANSFORMS))}") from None
    return factory(input_dim, **cfg)


def available_transforms() -> list[str]:
    """Names of all registered layers, sorted."""
    return sorted(_TRANSFORMS)


@register_transform("planar")
def _planar(input_dim: int, **cfg: object) -> FlowTransform:
    return Planar(input_dim, **cfg)


@register_transform("iaf")
def _iaf(input_dim: int, **cfg: object) -> FlowTransform:
    return AffineAutoregressive(input_dim, direction="iaf", **cfg)


@register_transform("maf")
def _maf(input_dim: int, **cfg: object) -> FlowTransform:
    return AffineAutoregressive(input_dim, direction="maf", **cfg)


@register_transform("permute")
def _permute(input_dim: int, **cfg: object) -> FlowTransform:
    return Permute(input_dim, **cfg)


@register_transform("additive_coupling")
def _additive_coupling(input_dim: int, **cfg: object) -> FlowTransform:
    return AdditiveCoupling(input_dim, **cfg)


@register_transform("affine_coupling")
def _affine_coupling(input_dim: int, **cfg: object) -> FlowTransform:
    return AffineCoupling(input_dim, **cfg)


@register_transform("scale")
def _scale(input_dim: int, **cfg: object) -> FlowTransform:
    return Scale(input_dim, **cfg)


@register_transform("actnorm")
def _actnorm(input_dim: int, **cfg: object) -> FlowTransform:
    return ActNorm(input_dim, **cfg)


@register_transform("lu_linear")
def _lu_linear(input_dim: int, **cfg: object) -> FlowTransform:
    return LULinear(input_dim, **cfg)


@register_transform("spline_coupling")
def _spline_coupling(input_dim: int, **cfg: object) -> FlowTransform:
    return SplineCoupling(input_dim, **cfg)


@register_transform("spline_autoregressive")
def _spline_autoregressive(input_dim: int, **cfg: object) -> FlowTransform:
    return SplineAutoregressive(input_dim, **cfg)
