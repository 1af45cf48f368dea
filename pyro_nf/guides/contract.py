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
import warnings
from typing import Any, ClassVar

import torch
from pyro.infer.autoguide import AutoContinuous

from pyro_nf._sites import check_model_sites, hide_non_latent
from pyro_nf._util import isolated_rng
from pyro_nf.guides import store as _store
from pyro_nf.transforms import NotInvertibleError

__all__: list[str] = []

#: state-dict entry naming the guide class and structure (uint8 bytes of a JSON string)
_SIGNATURE = "_signature_buffer"
#: constructor settings that only initialise (a state dict overrides them) or change the gradient
_INIT_ONLY = frozenset({"init_scale", "init_loc_fn", "stl"})


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
        # own parameters: a name no other live pyro_nf guide holds (see pyro_nf.guides.store)
        self._pyro_name = _store.claim_name(self, type(self).__name__)
        self._refresh_signature()

    def _refresh_signature(self) -> None:
        """(Re)write the signature buffer from ``config`` (call again after changing ``config``)."""
        sig = json.dumps(self._signature(), sort_keys=True).encode()
        self.register_buffer(_SIGNATURE, torch.tensor(list(sig), dtype=torch.uint8))  # type: ignore[attr-defined]

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        with isolated_rng():
            check_model_sites(self.model, args, kwargs, type(self).__name__, self.supports_subsampled_latents)
        found = _store.take_entries(self)  # store entries under this guide's name, not yet its own
        if self._materialised:
            if found:
                warnings.warn(
                    f"{type(self).__name__}: {len(found)} entries under {self._pyro_name!r} in Pyro's "
                    "param store were dropped in favour of the loaded state dict",
                    UserWarning,
                    stacklevel=3,
                )
            with isolated_rng():
                self._setup_materialised(*args, **kwargs)
            return
        try:
            with isolated_rng():
                self._setup_fresh_traced(*args, **kwargs)
            self._setup_fresh_params()
        except BaseException:
            _store.restore_entries(found)
            raise
        _store.adopt_entries(self, found)

    def _setup_fresh_traced(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)  # type: ignore[misc]

    def _setup_fresh_params(self) -> None:
        """Parameter creation that may consume randomness (runs outside the RNG fork)."""

    def _setup_materialised(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError  # abstract: subclasses implement it

    def _materialise(self, state_dict: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError  # abstract: subclasses implement it

    def _signature(self) -> dict[str, str]:
        shape = {k: v for k, v in self.config.items() if k not in _INIT_ONLY}
        return {"guide": type(self).__name__, "config": json.dumps(shape, sort_keys=True, default=str)}

    def _check_signature(self, state_dict: Any) -> Any:
        """Refuse a state dict of another guide class or structure (IAF and MAF have equal shapes)."""
        raw = state_dict.get(_SIGNATURE) if hasattr(state_dict, "get") else None
        if raw is None:  # a state dict from elsewhere (or an older pyro_nf): shapes are still checked
            return {**state_dict, _SIGNATURE: self._signature_buffer.clone()}
        mine = self._signature()
        try:
            theirs = json.loads(bytes(raw.tolist()).decode())
        except (ValueError, AttributeError, TypeError):
            theirs = {"guide": "an unknown guide"}
        if theirs.get("guide") != mine["guide"]:
            raise ValueError(
                f"{mine['guide']}.load_state_dict: the state dict comes from guide class "
                f"{theirs.get('guide')}; load it into a {theirs.get('guide')} built with the same settings"
            )
        if theirs.get("config") != mine["config"]:
            raise ValueError(
                f"{mine['guide']}.load_state_dict: the state dict is from a guide built with "
                f"{theirs.get('config')}, this one has {mine['config']}"
            )
        return state_dict

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load parameters, also into a never-called guide: its parameters are first created
        from the state dict's shapes, and its first call then neither re-initialises them nor
        consumes the random stream.

        Raises:
            ValueError: the state dict comes from another guide class or one built with other
                structural settings (``num_flows``, ``hidden_dims``, ``rank``, ...), or (at the first
                call) from a model with another number of latent dimensions.
        """
        state_dict = self._check_signature(state_dict)
        if getattr(self, "prototype_trace", None) is None and not self._materialised:
            self._materialise({k: v for k, v in state_dict.items() if k != _SIGNATURE})
            self._materialised = True
        return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]

    def _ensure_set_up(self, args: tuple, kwargs: dict) -> None:
        if getattr(self, "prototype_trace", None) is None:
            with torch.no_grad():
                self._setup_prototype(*args, **kwargs)

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Posterior median of each latent site; a never-called guide (e.g. one just given a
        ``load_state_dict``) is set up first on the model arguments given here."""
        self._ensure_set_up(args, kwargs)
        return super().median(*args, **kwargs)  # type: ignore[misc]

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Posterior quantiles of each latent site (set-up as in :meth:`median`)."""
        self._ensure_set_up(args, kwargs)
        return super().quantiles(quantiles, *args, **kwargs)  # type: ignore[misc]

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
