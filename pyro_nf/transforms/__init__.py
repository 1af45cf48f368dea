"""Flow layers: each a :class:`pyro.distributions.TransformModule` with an exact log|det J|."""

from pyro_nf.transforms.autoregressive import AffineAutoregressive
from pyro_nf.transforms.base import FlowTransform, NotInvertibleError
from pyro_nf.transforms.made import MADE, make_order
from pyro_nf.transforms.permute import Permute
from pyro_nf.transforms.planar import Planar
from pyro_nf.transforms.registry import available_transforms, make_transform, register_transform

__all__ = [
    "MADE",
    "AffineAutoregressive",
    "FlowTransform",
    "NotInvertibleError",
    "Permute",
    "Planar",
    "available_transforms",
    "make_order",
    "make_transform",
    "register_transform",
]
