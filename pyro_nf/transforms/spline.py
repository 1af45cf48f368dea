r"""Monotone rational-quadratic splines (Durkan, Bekasov, Murray & Papamakarios 2019), as coupling
and as autoregressive layers.

On :math:`[-B, B]` the map is a monotone rational-quadratic spline with :math:`K` bins; outside it
is the identity (linear tails), with derivative 1 at :math:`\pm B` so the map is :math:`C^1`. In
bin :math:`k` (knots :math:`x_k, y_k`, widths :math:`w_k`, heights :math:`h_k`, slope
:math:`s = h_k / w_k`, knot derivatives :math:`d_k, d_{k+1}`, :math:`\xi = (x - x_k)/w_k`):

.. math:: y = y_k + h_k \frac{s\xi^2 + d_k \xi(1-\xi)}{s + (d_{k+1} + d_k - 2s)\xi(1-\xi)},

.. math:: \frac{dy}{dx} = \frac{s^2\,[d_{k+1}\xi^2 + 2s\xi(1-\xi) + d_k(1-\xi)^2]}
                                {[s + (d_{k+1} + d_k - 2s)\xi(1-\xi)]^2}.

The inverse solves a quadratic in :math:`\xi` in closed form (the numerically stable root
:math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`).

Parameters per coordinate: :math:`3K - 1` unconstrained numbers: bin widths and heights through a
softmax (each at least ``min_bin`` of :math:`2B`), the :math:`K - 1` interior derivatives as
:math:`d = e^{L \tanh(r / L)}` (in :math:`[e^{-L}, e^{L}]`).

**Exact identity at initialisation.** With a zero network output all widths equal all heights,
every derivative is :math:`e^0 = 1`, and the spline is the identity in exact arithmetic. The
textbook formulas above do not return :math:`y = x` *bit for bit* in floating point
(:math:`\xi^2 + \xi(1-\xi) \ne \xi` after rounding). We therefore evaluate them in a rearranged form,
written with the deviations :math:`a = s - 1 = (h_k - w_k)/w_k`,
:math:`\delta_k = d_k - 1 = \mathrm{expm1}(\cdot)` and :math:`G = \delta_k + \delta_{k+1} - 2a`, that
are each exactly 0 at the identity:

.. math:: y = x + (y_k - x_k) + \frac{w_k \xi\,[\,s a \xi + s \delta_k (1 - \xi) - G\,\xi(1-\xi)\,]}
                                     {1 + a + G\,\xi(1-\xi)},

.. math:: \log\frac{dy}{dx} = 2\,\mathrm{log1p}(a)
          + \mathrm{log1p}(\delta_{k+1}\xi^2 + 2a\,\xi(1-\xi) + \delta_k (1-\xi)^2)
          - 2\,\mathrm{log1p}(a + G\,\xi(1-\xi)),

algebraically identical to Durkan et al.'s, so that a zero network output gives :math:`y = x` and
:math:`\log|\det J| = 0` exactly; the inverse is rearranged the same way (:func:`rq_spline`).

References:
    Durkan, Bekasov, Murray & Papamakarios (2019), Neural Spline Flows.
    https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from pyro_nf.transforms.base import FlowTransform
from pyro_nf.transforms.coupling import Coupling
from pyro_nf.transforms.made import MADE


def _check_spline_options(num_bins: int, bound: float, min_bin: float, max_log_derivative: float) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    if not (isinstance(bound, (int, float)) and bound > 0):
        raise ValueError(f"bound must be a positive number, got {bound!r}")
    if not (isinstance(min_bin, (int, float)) and 0 < min_bin * num_bins < 1):
        raise ValueError(f"min_bin must be positive with min_bin * num_bins < 1, got {min_bin!r}")
    if not (isinstance(max_log_derivative, (int, float)) and max_log_derivative > 0):
        raise ValueError(f"max_log_derivative must be a positive number, got {max_log_derivative!r}")


def _knots(raw: torch.Tensor, bound: float, min_bin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Knot positions ``(..., K + 1)`` from -B to B (ends exact) and bin sizes ``(..., K)``."""
    k = raw.shape[-1]
    frac = min_bin + (1 - min_bin * k) * torch.softmax(raw, dim=-1)
    knots = F.pad(torch.cumsum(frac, dim=-1), (1, 0)) * (2 * bound) - bound
    knots = torch.cat(
        [torch.full_like(knots[..., :1], -bound), knots[..., 1:-1], torch.full_like(knots[..., :1], bound)],
        dim=-1,
    )
    return knots, knots[..., 1:] - knots[..., :-1]


def rq_spline(
    v: torch.Tensor,
    params: torch.Tensor,
    bound: float = 5.0,
    min_bin: float = 1e-3,
    max_log_derivative: float = math.log(1e3),
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Elementwise rational-quadratic spline (or its inverse) with identity tails.

    Args:
        v: inputs ``(..., n)`` (``x``, or ``y`` when ``inverse``).
        params: ``(..., n, 3K - 1)``: width logits, height logits, interior log-derivative logits.
        bound: :math:`B`, the spline acts on :math:`[-B, B]`.
        min_bin: minimal bin width and height, as a fraction of :math:`2B`.
        max_log_derivative: :math:`L`, interior derivatives lie in :math:`[e^{-L}, e^{L}]`.
        inverse: evaluate :math:`x = g^{-1}(y)` instead.

    Returns:
        ``(out, log g'(x))``, the log-derivative of the *forward* map, both of shape ``(..., n)``.

    Example:
        >>> x = torch.linspace(-6.0, 6.0, 7)
        >>> y, logd = rq_spline(x, torch.zeros(7, 3 * 4 - 1))
        >>> torch.equal(y, x), torch.equal(logd, torch.zeros(7))
        (True, True)
    """
    k = (params.shape[-1] + 1) // 3
    cx, wx = _knots(params[..., :k], bound, min_bin)
    cy, hy = _knots(params[..., k : 2 * k], bound, min_bin)
    raw_d = params[..., 2 * k :]
    delta = torch.expm1(max_log_derivative * torch.tanh(raw_d / max_log_derivative))
    delta = F.pad(delta, (1, 1))  # d = 1 at -B and B: C^1 with the identity tails

    inside = (v >= -bound) & (v <= bound)
    vc = v.clamp(-bound, bound)
    knots_v = cy if inverse else cx
    idx = (vc.unsqueeze(-1) >= knots_v[..., 1:k]).sum(-1, keepdim=True)

    def at(t: torch.Tensor, i: torch.Tensor = idx) -> torch.Tensor:
        return t.gather(-1, i).squeeze(-1)

    x_k, y_k, w, h = at(cx), at(cy), at(wx), at(hy)
    d0, d1 = at(delta), at(delta, idx + 1)
    a = (h - w) / w  # s - 1
    s = 1 + a
    if not inverse:
        xi = ((vc - x_k) / w).clamp(0, 1)
        t = xi * (1 - xi)
        g = d0 + d1 - 2 * a
        num = w * xi * (s * a * xi + s * d0 * (1 - xi) - g * t)
        out = vc + (y_k - x_k) + num / (1 + a + g * t)
    else:
        u = (vc - y_k).clamp_min(0)
        g = d0 + d1 - 2 * a
        qa = h * (a - d0) + u * g
        qb = h * (1 + d0) - u * g
        qc = -s * u
        root = qb + torch.sqrt((qb * qb - 4 * qa * qc).clamp_min(0))
        xi = (2 * s * u / root).clamp(0, 1)
        t = xi * (1 - xi)
        out = vc + (x_k - y_k) + u * (2 * (u * g - h * d0) + 4 * qa * qc / root) / root
    logd = (
        2 * torch.log1p(a)
        + torch.log1p(d1 * xi * xi + 2 * a * t + d0 * (1 - xi) ** 2)
        - 2 * torch.log1p(a + g * t)
    )
    return torch.where(inside, out, v), torch.where(inside, logd, torch.zeros_like(logd))


class _SplineOptions:
    def _init_spline(self, num_bins: int, bound: float, min_bin: float, max_log_derivative: float) -> int:
        _check_spline_options(num_bins, bound, min_bin, max_log_derivative)
        self.num_bins, self.bound = num_bins, float(bound)
        self.min_bin, self.max_log_derivative = float(min_bin), float(max_log_derivative)
        return 3 * num_bins - 1

    def _spline(self, v: torch.Tensor, params: torch.Tensor, inverse: bool) -> tuple:
        """``params`` of shape ``(..., 3K - 1, n)``; returns ``(out, summed log-derivative)``."""
        out, logd = rq_spline(
            v, params.transpose(-1, -2), self.bound, self.min_bin, self.max_log_derivative, inverse=inverse
        )
        return out, logd.sum(-1)

    def _spline_repr(self) -> str:
        return f"num_bins={self.num_bins}, bound={self.bound}"


class SplineCoupling(_SplineOptions, Coupling):
    r"""Coupling layer whose elementwise map is a rational-quadratic spline (NSF-RQ coupling).

    Args:
        input_dim: event dimension :math:`D`.
        hidden_dims: conditioner hidden widths.
        num_bins: :math:`K`.
        bound: :math:`B`; identity outside :math:`[-B, B]`.
        min_bin: minimal bin width/height as a fraction of :math:`2B`.
        max_log_derivative: bound on the log of the interior knot derivatives.
        param_scale: the conditioner's output is multiplied by this before it becomes the spline's
            parameters (< 1 slows the spline's shape down under Adam, whose steps do not scale
            with the gradient).
        **kwargs: ``mask``, ``parity``, ``activation``, ``skip_connections`` (see :class:`Coupling`).

    Example:
        >>> t = SplineCoupling(4, hidden_dims=(8,), num_bins=6)
        >>> x = torch.randn(3, 4)
        >>> torch.equal(t(x), x)
        True
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (32, 32),
        *,
        num_bins: int = 8,
        bound: float = 5.0,
        min_bin: float = 1e-3,
        max_log_derivative: float = math.log(1e3),
        param_scale: float = 1.0,
        **kwargs,
    ) -> None:
        self.num_params = self._init_spline(num_bins, bound, min_bin, max_log_derivative)
        if not (isinstance(param_scale, (int, float)) and param_scale > 0):
            raise ValueError(f"param_scale must be a positive number, got {param_scale!r}")
        self.param_scale = float(param_scale)
        super().__init__(input_dim, hidden_dims, **kwargs)

    def _elementwise(self, x_t, params):
        return self._spline(x_t, params * self.param_scale, inverse=False)

    def _elementwise_inverse(self, y_t, params):
        return self._spline(y_t, params * self.param_scale, inverse=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._spline_repr()}"


class SplineAutoregressive(_SplineOptions, FlowTransform):
    r"""MADE-conditioned rational-quadratic spline layer, in the IAF or the MAF direction.

    With :math:`g(\cdot;\theta)` the elementwise spline and :math:`\theta = \mathrm{MADE}(c)`:
    IAF :math:`y = g(x; \theta(x))` (one-pass sampling, :math:`D` passes for the density of an
    arbitrary value); MAF :math:`y = g(x; \theta(y))` (one-pass density, :math:`D` passes to
    sample). :math:`\log|\det J| = \sum_i \log g_i'(x_i)` either way.

    Args:
        input_dim: event dimension :math:`D`.
        hidden_dims: MADE hidden widths.
        direction: ``"iaf"`` or ``"maf"``.
        order: MADE variable order (see :func:`~pyro_nf.transforms.make_order`).
        num_bins, bound, min_bin, max_log_derivative: as :class:`SplineCoupling`.
        activation, skip_connections: see :class:`~pyro_nf.transforms.MADE`.

    Example:
        >>> t = SplineAutoregressive(3, hidden_dims=(8,), direction="maf")
        >>> x = torch.randn(2, 3)
        >>> torch.equal(t(x), x)
        True
    """

    has_inverse: ClassVar[bool] = True

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (32,),
        direction: str = "iaf",
        order: str | Sequence[int] | torch.Tensor = "natural",
        *,
        num_bins: int = 8,
        bound: float = 5.0,
        min_bin: float = 1e-3,
        max_log_derivative: float = math.log(1e3),
        activation: type[nn.Module] = nn.ReLU,
        skip_connections: bool = True,
    ) -> None:
        super().__init__(input_dim)
        if direction not in ("iaf", "maf"):
            raise ValueError(f"direction must be 'iaf' or 'maf', got {direction!r}")
        self.direction = direction
        self.sequential_inverse = direction == "iaf"
        num_params = self._init_spline(num_bins, bound, min_bin, max_log_derivative)
        self.made = MADE(
            input_dim,
            hidden_dims,
            num_outputs=num_params,
            order=order,
            activation=activation,
            zero_output=True,
            skip_connections=skip_connections,
        )

    def _sequential(self, weights: list, target: torch.Tensor, inverse: bool) -> tuple:
        """Pass ``k`` fixes the variable of degree ``k`` (see AffineAutoregressive)."""
        out = torch.zeros_like(target)
        ladj = None
        for _ in range(self.input_dim):
            out, ladj = self._spline(target, self.made.apply_weights(weights, out), inverse)
        return out, ladj

    def _forward_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.made.masked_weights()
        if self.direction == "iaf":
            return self._spline(x, self.made.apply_weights(weights, x), inverse=False)
        return self._sequential(weights, x, inverse=False)

    def _inverse_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.made.masked_weights()
        if self.direction == "maf":
            return self._spline(y, self.made.apply_weights(weights, y), inverse=True)
        return self._sequential(weights, y, inverse=True)

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, direction={self.direction!r}, {self._spline_repr()}"
