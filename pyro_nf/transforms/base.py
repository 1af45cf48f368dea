r"""The base class of every pyro_nf flow layer.

Implementing a flow layer (the checklist):

1. Subclass :class:`FlowTransform`; call ``super().__init__(input_dim)``.
2. Set the class attribute ``has_inverse``: ``True`` when ``_inverse`` is exact for *any* input
   (possibly by a sequential algorithm), ``False`` when the layer can only score its own samples
   (then ``_inverse`` is never called with anything but the cached output).
3. Implement ``_forward_and_ladj(x) -> (y, log|det dy/dx|)`` computing both in one pass; the base
   class caches the triple ``(x, y, ladj)`` so the log-det of a layer's own sample is never
   recomputed and never confused with another pair's (the pair is checked by identity).
4. Implement ``_inverse_and_ladj(y) -> (x, log|det dy/dx|)`` when ``has_inverse`` is True.
5. The layer must be *exactly* the identity at initialisation (``y == x`` bit for bit), so that a
   flow guide at step 0 equals the diagonal-Normal guide.
6. Accept any batch shape ``(..., input_dim)``; keep parameters in the module so ``.to(dtype,
   device)`` and ``state_dict`` work.
7. Register a factory ``factory(input_dim, **cfg)`` with
   :func:`pyro_nf.transforms.registry.register_transform`: the parametrised transform tests then
   check it against autograd automatically.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pyro.distributions.torch_transform import TransformModule
from torch.distributions import Transform, constraints

from pyro_nf.transforms.conditional import ConditionedTransform


class NotInvertibleError(NotImplementedError):
    """Raised when a layer without a closed-form inverse is asked to invert a value it did not
    produce itself (e.g. scoring external draws under a planar flow)."""


class FlowTransform(TransformModule):
    r"""Abstract bijection :math:`y = f(x)` on :math:`\mathbb{R}^D` with an exact
    :math:`\log|\det \partial y / \partial x|`.

    Attributes:
        has_inverse: whether :math:`f^{-1}` can be evaluated on arbitrary inputs.
        constant_log_det: whether :math:`\log|\det J|` does not depend on the input.
        input_dim: the dimension :math:`D` of the event.
    """

    has_inverse: ClassVar[bool] = True
    #: whether the inverse is a sequential solve of D passes (IAF-direction autoregressive layers),
    #: so that scoring an arbitrary value costs D network passes instead of one
    sequential_inverse: bool = False
    #: size of the context vector a conditional layer's conditioner reads (0: not conditional)
    context_dim: int = 0
    #: whether log|det J| is the same for every input (linear and volume-preserving layers)
    constant_log_det: ClassVar[bool] = False
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    #: sign of :math:`\det J` (``torch.jit`` tracing and ``Transform.sign`` users read it; the base
    #: class raises). +1: affine autoregressive layers (positive scales) and planar layers
    #: (:math:`\det J = 1 + \hat u^\top h'(\cdot) w > 0`) preserve orientation; a layer that may
    #: reverse it (a permutation) overrides this.
    sign = +1

    def __init__(self, input_dim: int) -> None:
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        super().__init__(cache_size=1)
        self.input_dim = input_dim
        self._ladj_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- subclass API -------------------------------------------------------------------------
    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # abstract: subclasses implement it

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotInvertibleError(
            f"{type(self).__name__} has no closed-form inverse: it can only score the samples it "
            "drew itself. Use a layer with has_inverse=True (e.g. 'maf' for one-pass density, "
            "'iaf' for a sequential inverse) to evaluate the density of arbitrary values."
        )

    # -- torch.distributions.Transform API ----------------------------------------------------
    def _check_event(self, value: torch.Tensor, what: str) -> None:
        if value.dim() < 1 or value.shape[-1] != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} expects {what} of shape (..., {self.input_dim}), "
                f"got {tuple(value.shape)}"
            )

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check_event(x, "inputs")
        y, ladj = self._forward_and_ladj(x)
        self._ladj_cache = (x, y, ladj)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check_event(y, "values")
        x, ladj = self._inverse_and_ladj(y)
        self._ladj_cache = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log|det J|`` of the forward map at ``x`` (with ``y = f(x)``), shape ``x.shape[:-1]``."""
        cache = self._ladj_cache
        if cache is not None and x is cache[0] and y is cache[1]:
            return cache[2]
        return self._ladj_from_pair(x, y)

    def _ladj_from_pair(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Log-det of an uncached pair; override when ``y`` gives it in fewer passes than ``x``."""
        return self._forward_and_ladj(x)[1]

    def _context_args(self, context: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if context is None:
            return ()
        if not self.context_dim:
            raise ValueError(
                f"{type(self).__name__} takes no context (context_dim=0); condition(context) "
                "returns the layer itself for such layers"
            )
        return (context,)

    def forward_and_log_det(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(f(x), log|det J_f(x)|)`` in one pass, without touching the cache (at
        ``context`` for a conditional layer)."""
        self._check_event(x, "inputs")
        return self._forward_and_ladj(x, *self._context_args(context))

    def inverse_and_log_det(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(f^{-1}(y), log|det J_f(f^{-1}(y))|)`` (the *forward* log-det) in one pass."""
        self._check_event(y, "values")
        return self._inverse_and_ladj(y, *self._context_args(context))

    def condition(self, context: torch.Tensor) -> Transform:
        """This layer at a fixed ``context`` (a :class:`~pyro_nf.transforms.conditional.
        ConditionedTransform`); a layer without a context (``context_dim == 0``) ignores it and
        returns itself."""
        if not self.context_dim:
            return self
        return ConditionedTransform(self, context)

    def __hash__(self) -> int:
        return super(torch.nn.Module, self).__hash__()

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}"
