r"""One optimizer step for all of a fit's parameters, fused where Pyro's would loop.

``pyro.optim.PyroOptim`` keeps one torch optimizer per parameter tensor and steps them one by one:
a flow guide with 14 parameter tensors pays 14 optimizer calls per step, more than its forward and
backward passes at small D. :func:`fused_step` performs the *same* update (Adam is elementwise, so
per-tensor and multi-tensor updates are the same arithmetic) with one ``torch.optim.adam.adam(...,
foreach=True)`` call over the per-parameter optimizers' own state tensors. Their state, learning
rates and schedules stay where Pyro keeps them, so checkpoints (``PyroOptim.get_state``), LR
schedulers and the divergence guard's moment resets work unchanged. It falls back to Pyro's loop
when the optimizers are not plain ``torch.optim.Adam`` with one shared configuration, when a
gradient clip is set, or while some optimizer has no state yet (its first step creates it).

Without weight decay or ``maximize`` (fit()'s optimisers) the moments live in flat buffers
(:class:`_FlatAdam`; the optimizers' state entries are views of them, so checkpoints and resets see
them as before). On CPU the parameters themselves are then made views of one flat buffer too (the same
tensor objects, ``p.data`` re-pointed), and every update after the first is one call of
``torch.optim.Adam(fused=True)``'s kernel (``torch._fused_adam_``) on the flat parameters, gradient
and moments: one pass over memory instead of eight. That kernel orders Adam's arithmetic differently
from the ``foreach``/per-tensor update Pyro runs, so an update can differ from Pyro's in the last bit
of some entries (seeded fits changed with this; over 300 steps the parameters stayed within 1.2e-7 of
Pyro's loop in the tests); it is bit-identical to ``torch.optim.Adam(fused=True)`` stepping one flat
parameter, and deterministic, so reruns, replayed and eager steps and resumed checkpoints still agree
bit for bit. Elsewhere (another device, mixed dtypes) the update is seven operations on flat tensors
plus one multi-tensor ``addcdiv_``: the ``foreach`` arithmetic, bit for bit. The buffers are rebuilt
whenever the optimizers' state was replaced (a moment reset, a loaded checkpoint); only ``lr`` may
change between steps (schedules, the guard's back-off), the other Adam settings are read when the
buffers are built.
"""

from __future__ import annotations

import torch
from pyro.optim import PyroOptim
from torch.optim.adam import adam as _adam

_KEYS = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "amsgrad",
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "fused",
    "decoupled_weight_decay",
)


def _fusable(optim: PyroOptim, params: list[torch.Tensor]) -> list[torch.optim.Adam] | None:
    objs = optim.optim_objs
    opts = []
    for p in params:
        obj = objs.get(p)
        if obj is None or optim.grad_clip.get(p) is not None:
            return None
        opt = getattr(obj, "optimizer", obj)
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1 or not opt.state.get(p):
            return None
        opts.append(opt)
    first = opts[0].param_groups[0]
    if first["capturable"] or first["differentiable"] or first["fused"] or first["amsgrad"]:
        return None
    for opt in opts[1:]:
        group = opt.param_groups[0]
        if any(group.get(k) != first.get(k) for k in _KEYS):
            return None
    return opts


#: the smallest normal float32: a floor below it would itself be slow and is not used
_MIN_NORMAL = 1.1754943508222875e-38


class _FlatAdam:
    r"""The Adam moments of a fixed list of parameters in two flat buffers (the per-parameter
    optimizers' ``exp_avg`` / ``exp_avg_sq`` / ``step`` state entries become views of them), so one
    update is a handful of operations on three flat tensors, not a handful per parameter tensor.

    On CPU with the parameters in one flat buffer (:func:`_flatten`) an update is one fused kernel call
    (see the module docstring). Otherwise, Adam being elementwise, it is the same arithmetic, element by
    element, as ``torch.optim.adam``'s ``foreach`` update (``lerp_``, ``mul_``, ``addcmul_``, ``sqrt``,
    ``div_``, ``add_``, ``addcdiv_`` with the same scalars): bit-identical parameters.

    One exact shortcut: ``sqrt`` of exact zeros is about 4x slower than of other values on some
    CPUs, and a MADE's masked weights keep ``exp_avg_sq`` at zero forever (two thirds of the entries
    at D = 100). The second moment is floored at :math:`f = (\epsilon\, 2^{-26} b)^2` before the
    root, with :math:`b = \sqrt{1 - \beta_2^t}`: for any :math:`v < f` (zeros included) both
    :math:`\sqrt v / b` and :math:`\sqrt f / b` are below :math:`\epsilon\, 2^{-25}`, less than
    half a unit in the last place of :math:`\epsilon`, so :math:`\sqrt v / b + \epsilon` rounds
    to :math:`\epsilon` either way: the denominator, and the update, are unchanged bit for bit.
    """

    def __init__(self, params: list[torch.Tensor], opts: list[torch.optim.Adam]) -> None:
        self.params, self.opts = params, opts
        states = [opt.state[p] for p, opt in zip(params, opts, strict=True)]
        self.states = states
        self.avg = torch.cat([st["exp_avg"].reshape(-1) for st in states])
        self.sq = torch.cat([st["exp_avg_sq"].reshape(-1) for st in states])
        self.steps = torch.stack([st["step"] for st in states])
        self.denom = torch.empty_like(self.sq)
        sizes = [p.numel() for p in params]
        self.avg_views = [v.view(p.shape) for v, p in zip(self.avg.split(sizes), params, strict=True)]
        sq_views = [v.view(p.shape) for v, p in zip(self.sq.split(sizes), params, strict=True)]
        self.denom_views = [v.view(p.shape) for v, p in zip(self.denom.split(sizes), params, strict=True)]
        for i, st in enumerate(states):
            st["exp_avg"], st["exp_avg_sq"], st["step"] = self.avg_views[i], sq_views[i], self.steps[i]
        self.step_views = [st["step"] for st in states]
        self.sq_views = sq_views
        #: the parameters' own flat buffer (they are views of it) where the fused kernel applies, else None
        self.flat = _flatten(params)
        self.ptrs = [p.data_ptr() for p in params] if self.flat is not None else []

    def intact(self, params: list[torch.Tensor]) -> bool:
        """Whether the optimizers still hold these buffers' views (a moment reset replaces them)."""
        if params is not self.params and list(map(id, params)) != list(map(id, self.params)):
            return False
        for p, opt, st, avg, sq, step in zip(
            self.params, self.opts, self.states, self.avg_views, self.sq_views, self.step_views, strict=True
        ):
            if opt.state.get(p) is not st or st.get("exp_avg") is not avg or st.get("exp_avg_sq") is not sq:
                return False
            if st.get("step") is not step:
                return False
        lr = self.opts[0].param_groups[0]["lr"]
        return all(opt.param_groups[0]["lr"] == lr for opt in self.opts)

    def step(self) -> bool:
        """One update; ``False`` (nothing done) when some parameter has no gradient or the steps differ."""
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            return False
        group = self.opts[0].param_groups[0]
        step = float(self.steps[0]) + 1.0
        if not bool((self.steps == self.steps[0]).all()):
            return False
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        with torch.no_grad():
            grad = torch.cat([g.reshape(-1) for g in grads])
            self.steps.add_(torch.tensor(1.0), alpha=1.0)
            if self.flat is not None and [p.data_ptr() for p in self.params] == self.ptrs:
                # one pass over parameters, gradient and moments (torch.optim.Adam(fused=True)'s kernel)
                torch._fused_adam_(
                    [self.flat],
                    [grad],
                    [self.avg],
                    [self.sq],
                    [],
                    [self.steps[0]],
                    amsgrad=False,
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=0.0,
                    eps=eps,
                    maximize=False,
                )
                return True
            self.avg.lerp_(grad, 1 - beta1)
            self.sq.mul_(beta2)
            self.sq.addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = (lr / bias_correction1) * -1
            bc2_sqrt = bias_correction2**0.5
            floor = (eps * 2.0**-26 * bc2_sqrt) ** 2  # see _sqrt_floor
            if floor >= _MIN_NORMAL:
                torch.clamp_min(self.sq, floor, out=self.denom)
                self.denom.sqrt_()
            else:
                torch.sqrt(self.sq, out=self.denom)
            self.denom.div_(bc2_sqrt)
            self.denom.add_(eps)
            torch._foreach_addcdiv_(self.params, self.avg_views, self.denom_views, step_size)
        return True


def _flatten(params: list[torch.Tensor]) -> torch.Tensor | None:
    """Make ``params`` views of one flat buffer (``p.data = view``: the same tensor objects, so the
    param store, modules and optimizer state keep seeing them) and return that buffer; ``None``
    (nothing changed) unless they are distinct CPU leaf tensors of one floating dtype, not views.
    Parameters already laid out back to back in one storage keep it."""
    first = params[0]
    if first.device.type != "cpu" or not first.dtype.is_floating_point:
        return None
    ptrs = set()
    for p in params:
        if p.device != first.device or p.dtype != first.dtype or not p.is_leaf or p._base is not None:
            return None
        ptrs.add(p.data_ptr())
    if len(ptrs) != len(params):
        return None
    total = sum(p.numel() for p in params)
    storage, offset, start = first.untyped_storage(), first.storage_offset(), first.storage_offset()
    for p in params:
        if p.untyped_storage().data_ptr() != storage.data_ptr() or p.storage_offset() != offset:
            break
        if not p.is_contiguous():
            break
        offset += p.numel()
    else:
        if storage.nbytes() == total * first.element_size() and start == 0:
            return torch.empty(0, dtype=first.dtype).set_(storage, 0, (total,))
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    with torch.no_grad():
        for p, view in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.data = view.view(p.shape)
    return flat


def flat_parameters(optim: PyroOptim, params: list[torch.Tensor]) -> torch.Tensor | None:
    """The flat buffer :func:`fused_step` keeps ``params`` in (in this order), or ``None``."""
    flat = getattr(optim, "_pyro_nf_flat", None)
    if flat is None or flat.flat is None or flat.params is not params:
        return None
    return flat.flat if [p.data_ptr() for p in params] == flat.ptrs else None


def _plain(opts: list[torch.optim.Adam]) -> bool:
    group = opts[0].param_groups[0]
    return not (group["weight_decay"] or group["maximize"] or group.get("decoupled_weight_decay"))


def fused_step(optim: PyroOptim, params: list[torch.Tensor]) -> None:
    """``optim(params)``, as one multi-tensor Adam update when every parameter's optimizer is a
    plain Adam with state and the same settings (see the module docstring); Pyro's loop otherwise.

    Example:
        >>> import pyro
        >>> p = torch.nn.Parameter(torch.ones(3))
        >>> optim = pyro.optim.Adam({"lr": 0.1})
        >>> p.grad = torch.ones(3); fused_step(optim, [p]); p.grad = torch.ones(3)
        >>> fused_step(optim, [p])  # second step: fused
        >>> [round(v, 3) for v in p.detach().tolist()]
        [0.8, 0.8, 0.8]
    """
    flat = getattr(optim, "_pyro_nf_flat", None)
    if flat is not None and flat.intact(params) and flat.step():
        return
    opts = _fusable(optim, params) if params else None
    if opts is None:
        optim(params)
        return
    if _plain(opts) and all(p.grad is not None for p in params):
        flat = optim._pyro_nf_flat = _FlatAdam(params, opts)
        if flat.step():
            return
    group = opts[0].param_groups[0]
    with_grad, grads, avgs, sqs, steps = [], [], [], [], []
    for p, opt in zip(params, opts, strict=True):
        if p.grad is None:
            continue
        state = opt.state[p]
        with_grad.append(p)
        grads.append(p.grad)
        avgs.append(state["exp_avg"])
        sqs.append(state["exp_avg_sq"])
        steps.append(state["step"])
    if not with_grad:
        return
    beta1, beta2 = group["betas"]
    with torch.no_grad():
        _adam(
            with_grad,
            grads,
            avgs,
            sqs,
            [],
            steps,
            foreach=True,
            decoupled_weight_decay=group.get("decoupled_weight_decay", False),
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )
