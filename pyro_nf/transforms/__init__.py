"""Flow layers: each a :class:`pyro.distributions.TransformModule` with an exact log|det J|."""

from .autoregressive import AffineAutoregressive
from .base import FlowTransform, NotInvertibleError
from .made import MADE, make_order
from .permute import Permute
from .planar import Planar
from .registry import available_transforms, make_transform, register_transform

__all__ = [
    "MADE", "AffineAutoregressive", "FlowTransform", "NotInvertibleError", "Permute", "Planar",
    "available_transforms", "make_order", "make_transform", "register_transform",
]
