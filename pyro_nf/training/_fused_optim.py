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
    opts = _fusable(optim, params) if params else None
    if opts is None:
        optim(params)
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
