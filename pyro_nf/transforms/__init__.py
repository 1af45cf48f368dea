"""Flow layers: each a :class:`pyro.distributions.TransformModule` with an exact log|det J|."""

from pyro_nf.transforms.actnorm import ActNorm, Scale
from pyro_nf.transforms.autoregressive import AffineAutoregressive
from pyro_nf.transforms.base import FlowTransform, NotInvertibleError
from pyro_nf.transforms.coupling import AdditiveCoupling, AffineCoupling, Coupling, coupling_mask
from pyro_nf.transforms.linear import FixedAffine, LULinear
from pyro_nf.transforms.made import MADE, make_order
from pyro_nf.transforms.permute import Permute
from pyro_nf.transforms.planar import Planar
from pyro_nf.transforms.registry import available_transforms, make_transform, register_transform
from pyro_nf.transforms.spline import SplineAutoregressive, SplineCoupling, rq_spline

__all__ = [
    "MADE",
    "ActNorm",
    "AdditiveCoupling",
    "AffineAutoregressive",
    "AffineCoupling",
    "Coupling",
    "FixedAffine",
    "FlowTransform",
    "LULinear",
    "NotInvertibleError",
    "Permute",
    "Planar",
    "Scale",
    "SplineAutoregressive",
    "SplineCoupling",
    "available_transforms",
    "coupling_mask",
    "make_order",
    "make_transform",
    "register_transform",
    "rq_spline",
]
