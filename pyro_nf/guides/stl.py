r"""The "sticking the landing" gradient estimator (Roeder, Wu & Duvenaud 2017) for flow guides.

The reparametrised ELBO gradient of :math:`\mathbb{E}_q[\log p(z) - \log q_\phi(z)]` with
:math:`z = f_\phi(\varepsilon)` has a *path* term and a *score* term
:math:`-\nabla_\phi \log q_\phi(z)|_{z\ \mathrm{fixed}}`, whose expectation is zero but whose variance
does not vanish even when :math:`q = p`. STL drops it: :math:`\log q` is evaluated with the guide's
parameters detached, so gradients reach them only through :math:`z`. This needs the density of the
drawn :math:`z` under detached layers, i.e. an inverse: one pass per MAF layer, :math:`D` sequential
passes per IAF layer; planar layers have none.

References:
    Roeder, Wu & Duvenaud (2017), Sticking the Landing: Simple, Lower-Variance Gradient Estimators
    for Variational Inference. https://arxiv.org/abs/1703.09194
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution, TransformedDistribution
from torch.distributions import Distribution, Transform, constraints
from torch.nn.utils.stateless import _reparametrize_module

from pyro_nf.transforms import FlowTransform


class DetachedLayer(Transform):
    """A flow layer evaluated with its parameters detached (gradients reach the inputs only)."""

    bijective = True
    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, layer: FlowTransform) -> None:
        super().__init__(cache_size=0)
        self.layer = layer
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _detached(self):
        params = {name: p.detach() for name, p in self.layer.named_parameters()}
        return _reparametrize_module(self.layer, params)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        with self._detached():
            y, ladj = self.layer.forward_and_log_det(x)
        self._last = (x, y, ladj)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        with self._detached():
            x, ladj = self.layer.inverse_and_log_det(y)
        self._last = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        last = self._last
        if last is not None and x is last[0] and y is last[1]:
            return last[2]
        with self._detached():
            return self.layer._ladj_from_pair(x, y)


class StickingTheLanding(TorchDistribution):
    """Draws (with gradients) from ``posterior``; scores values under ``detached`` (same density,
    parameters detached). Used as the guide's latent distribution when ``stl=True``."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, posterior: Distribution, detached: Distribution) -> None:
        self.posterior = posterior
        self.detached = detached
        super().__init__(posterior.batch_shape, posterior.event_shape, validate_args=False)

    @property
    def support(self):
        return self.posterior.support

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self.posterior.rsample(sample_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self.posterior.sample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.detached.log_prob(value)

    def expand(self, batch_shape: Sequence[int], _instance=None) -> StickingTheLanding:
        return StickingTheLanding(self.posterior.expand(batch_shape), self.detached.expand(batch_shape))


def detached_flow(base: Distribution, layers: Sequence[FlowTransform]) -> TransformedDistribution:
    """The flow distribution with every parameter (base and layers) detached."""
    return TransformedDistribution(base, [DetachedLayer(layer) for layer in layers])
