"""The guide contract every pyro_nf guide meets, on top of its Pyro base class.

How to add a guide (the checklist):

1. Subclass a Pyro autoguide (``AutoContinuous`` for one joint unconstrained vector) together with
   :class:`_ContinuousMixin` (or :class:`_ContractMixin` for other bases), mixin first.
2. Call ``self._init_contract(config)`` in ``__init__`` with the constructor settings (JSON-able:
   they go into ``InferenceData`` attrs).
3. Create parameters in ``_setup_fresh_params`` (may use randomness) and implement
   ``_materialise(state_dict)`` so ``load_state_dict`` works on a never-called guide.
4. Set the capability flags: ``has_log_prob`` (can score arbitrary latents) and
   ``supports_subsampled_latents``.
5. Register a factory ``(model, **kwargs) -> guide`` with :func:`pyro_nf.register_guide`: the guide
   contract tests (``tests/guides/``) then run on it automatically.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import torch
from pyro.infer.autoguide import AutoContinuous

from pyro_nf._sites import check_model_sites, hide_non_latent
from pyro_nf._util import isolated_rng
from pyro_nf.transforms import NotInvertibleError

__all__: list[str] = []


class _ContractMixin:
    """What every pyro_nf guide adds to its Pyro base: site checks with clear errors, a set-up that
    does not consume the random stream, and ``load_state_dict`` into a never-called guide."""

    #: whether :meth:`log_prob_unconstrained` can score *arbitrary* latents.
    has_log_prob: ClassVar[bool] = True
    #: whether latent sites inside subsampled plates are modelled correctly.
    supports_subsampled_latents: ClassVar[bool] = False
    #: the registry name when made by :func:`pyro_nf.make_guide`, else "" (the class name is used)
    registry_name: str = ""
    _prototype_hide_fn = staticmethod(hide_non_latent)

    def _init_contract(self, config: dict[str, Any]) -> None:
        self._materialised = False
        self.config = config

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        with isolated_rng():
            check_model_sites(self.model, args, kwargs, type(self).__name__, self.supports_subsampled_latents)
        with isolated_rng():
            if self._materialised:
                self._setup_materialised(*args, **kwargs)
                return
            self._setup_fresh_traced(*args, **kwargs)
        self._setup_fresh_params()

    def _setup_fresh_traced(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)  # type: ignore[misc]

    def _setup_fresh_params(self) -> None:
        """Parameter creation that may consume randomness (runs outside the RNG fork)."""

    def _setup_materialised(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError  # abstract: subclasses implement it

    def _materialise(self, state_dict: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError  # abstract: subclasses implement it

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load parameters, also into a never-called guide: its parameters are first created
        from the state dict's shapes, and its first call then neither re-initialises them nor
        consumes the random stream."""
        if getattr(self, "prototype_trace", None) is None and not self._materialised:
            self._materialise(state_dict)
            self._materialised = True
        return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]

    def config_json(self) -> str:
        """The constructor settings as a JSON string (for provenance, e.g. netCDF attrs)."""
        return json.dumps(self.config, sort_keys=True, default=str)


class _ContinuousMixin(_ContractMixin):
    """Shared by guides on :class:`AutoContinuous`: exact/sample-based quantiles and scoring."""

    def _setup_materialised(self, *args: Any, **kwargs: Any) -> None:
        AutoContinuous._setup_prototype(self, *args, **kwargs)  # type: ignore[arg-type]
        have = self.loc.shape[-1]  # type: ignore[attr-defined]
        if have != self.latent_dim:  # type: ignore[attr-defined]
            raise ValueError(
                f"{type(self).__name__}: the loaded state dict is for {have} unconstrained "
                f"latent dimensions but this model has {self.latent_dim}"
            )  # type: ignore[attr-defined]

    def log_prob_unconstrained(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        r"""Exact :math:`\log q(z)` of unconstrained latent vectors ``z`` of shape ``(..., D)``
        (in the packing order of :meth:`_unpack_latent`)."""
        if not self.has_log_prob:
            raise NotInvertibleError(
                f"{type(self).__name__} cannot score latents it did not draw itself (its flow "
                "has no inverse). Use AutoMAF (one-pass density) or AutoIAF (sequential "
                "inverse) to evaluate log q of external draws such as NUTS samples."
            )
        if getattr(self, "prototype_trace", None) is None:
            self._setup_prototype(*args, **kwargs)
        return self.get_posterior(*args, **kwargs).log_prob(z)  # type: ignore[attr-defined]
