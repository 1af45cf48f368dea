"""Flow layers: each a :class:`pyro.distributions.TransformModule` with an exact log|det J|."""

from .actnorm import ActNorm, Scale
from .autoregressive import AffineAutoregressive
from .base import FlowTransform, NotInvertibleError
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, coupling_mask
from .linear import LULinear
from .made import MADE, make_order
from .permute import Permute
from .planar import Planar
from .registry import available_transforms, make_transform, register_transform
from .spline import SplineAutoregressive, SplineCoupling, rq_spline

__all__ = [
    "MADE", "ActNorm", "AdditiveCoupling", "AffineAutoregressive", "AffineCoupling", "Coupling",
    "FlowTransform", "LULinear", "NotInvertibleError", "Permute", "Planar", "Scale",
    "SplineAutoregressive", "SplineCoupling", "available_transforms", "coupling_mask",
    "make_order", "make_transform", "register_transform", "rq_spline",
]
