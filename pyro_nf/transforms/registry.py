"""Registry of flow layers: name -> ``factory(input_dim, **cfg) -> FlowTransform``.

Tests parametrise over :func:`available_transforms`, so a newly registered layer is checked against
autograd automatically; guides build their layers by name (:class:`pyro_nf.AutoFlow`), so a layer
registered by a third party is usable in a guide, in :func:`pyro_nf.compare` and on the command line.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro_nf._registry import Registry
from pyro_nf.transforms.actnorm import ActNorm, Scale
from pyro_nf.transforms.autoregressive import AffineAutoregressive
from pyro_nf.transforms.base import FlowTransform
from pyro_nf.transforms.coupling import AdditiveCoupling, AffineCoupling
from pyro_nf.transforms.linear import LULinear
from pyro_nf.transforms.permute import Permute
from pyro_nf.transforms.planar import Planar
from pyro_nf.transforms.spline import SplineAutoregressive, SplineCoupling

__all__ = ["TRANSFORMS", "available_transforms", "make_transform", "register_transform"]

TransformFactory = Callable[..., FlowTransform]
#: The transform registry.
TRANSFORMS: Registry[TransformFactory] = Registry("transform")


def register_transform(name: str) -> Callable[[TransformFactory], TransformFactory]:
    """Decorator registering ``factory(input_dim, **cfg) -> FlowTransform`` under ``name``.

    Example:
        >>> @register_transform("my_planar")
        ... def _make(input_dim, **cfg):
        ...     return Planar(input_dim, **cfg)
        >>> make_transform("my_planar", 3).input_dim
        3
        >>> TRANSFORMS.unregister("my_planar")
    """
    return TRANSFORMS.register(name)


def make_transform(name: str, input_dim: int, **cfg: object) -> FlowTransform:
    """Build the registered layer ``name`` on ``input_dim`` variables.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return TRANSFORMS.make(name, input_dim, **cfg)


def available_transforms() -> list[str]:
    """Names of all registered layers, in registration order."""
    return TRANSFORMS.names()


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
