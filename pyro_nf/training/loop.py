r"""``fit()``: the SVI training loop, with progress, a divergence guard, early stopping and checkpoints.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.infer.autoguide import AutoNormal
    >>> from pyro_nf import fit
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> result = fit(model, AutoNormal(model), torch.full((20,), 3.0), num_steps=50, seed=0,
    ...              progress=False)
    >>> result.num_steps, result.stop_reason
    (50, 'completed')
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import ELBO, SVI
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler

from pyro_nf._util import capture_rng_state, isolated_rng
from pyro_nf.training import replay, setup
from pyro_nf.training._fused_optim import flat_parameters, fused_step
from pyro_nf.training.checkpoint import (
    CHECKPOINT_FORMAT,
    apply_checkpoint,
    check_checkpoint_target,
    load_checkpoint,
    save_checkpoint,
)
from pyro_nf.training.clipping import AdaptiveClip, GradClipper, resolve_clip
from pyro_nf.training.distributed import DataParallel, any_rank, resolve, restore_rng, together
from pyro_nf.training.errors import CheckpointError, is_divergence_error
from pyro_nf.training.fast_elbo import plan as plan_fast_path
from pyro_nf.training.guard import (
    RECOVERY_LR_FACTOR,
    DivergenceGuard,
    current_lr,
)
from pyro_nf.training.progress import Progress
from pyro_nf.training.schedule import (
    PATHS,
    STOP_REASONS,
    Converged,
    EarlyStop,
    FitResult,
    Schedule,
    switch_to_stl,
)

__all__ = ["PATHS", "STOP_REASONS", "Converged", "EarlyStop", "FitResult", "fit"]

#: The default recipe (chosen with ``benchmarks/accuracy.py``; the table is in the README): 16 draws per
#: step in one batched pass, Adam at 0.01 decaying to a tenth, the sticking-the-landing gradient for the
#: second half of the budget.
DEFAULT_NUM_STEPS: int = 10_000
DEFAULT_NUM_PARTICLES: int = 16
DEFAULT_LR_DECAY: float = 0.1
DEFAULT_STL_AFTER: float = 0.5
#: ``fit()`` stops when the guide matches the posterior to within Monte Carlo noise (see :class:`Converged`).
DEFAULT_EARLY_STOP: Converged = Converged()
DEFAULT_GRAD_CLIP: AdaptiveClip = AdaptiveClip()  #: gradients above 3x the recent median norm are rescaled


def fit(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_steps: int = DEFAULT_NUM_STEPS,
    lr: float = 0.01,
    optimizer: str | PyroOptim = "adam",
    lr_decay: float | None = DEFAULT_LR_DECAY,
    loss: ELBO | str | None = None,
    num_particles: int = DEFAULT_NUM_PARTICLES,
    time_budget: float | None = None,
    stl_after: float | None = DEFAULT_STL_AFTER,
    init: str | None = "laplace",
    vectorize_particles: bool = True,
    seed: int | None = None,
    progress: bool = True,
    early_stop: Converged | EarlyStop | bool | None = DEFAULT_EARLY_STOP,
    grad_clip: AdaptiveClip | bool | None = DEFAULT_GRAD_CLIP,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: str | os.PathLike | None = None,
    max_recoveries: int = 5,
    callback: Callable[[int, float], Any] | None = None,
    fast: bool | None = None,
    distributed: bool | DataParallel | None = None,
    **model_kwargs: Any,
) -> FitResult:
    r"""Fit ``guide`` to ``model`` by stochastic variational inference (Pyro's ``SVI``).

    ``args`` and ``model_kwargs`` go to the model and the guide at every step (as NumPyro's
    ``svi.run``); every fit option is keyword-only, so a model keyword named like one of them cannot
    be passed through ``**model_kwargs``.

    Calling ``fit`` again on a guide it fitted before continues that fit: the optimiser's moment
    estimates are kept on the guide and reused (same ``optimizer`` kind), so the new call's first
    steps are as small as the last ones of the previous call; ``lr`` is the new call's.

    Before the first step the model is traced once on the arguments: a failure is re-raised as
    :class:`FitInputError` naming the site, as are observed data holding NaN (unless masked) and a
    guide that samples sites the model lacks or with other shapes. These checks, Pyro's
    ``max_plate_nesting`` inference and the guide's parameter set-up run off the random stream.

    Args:
        model: the Pyro model.
        guide: a guide for it (any ``AutoGuide`` or guide callable).
        *args: positional arguments for model and guide.
        num_steps: the most SVI steps (when resuming, including the steps already taken).
        lr: initial learning rate (ignored if ``optimizer`` is a ``PyroOptim``).
        optimizer: ``"adam"`` (``pyro.optim.Adam``), ``"clipped_adam"`` (``pyro.optim.ClippedAdam``,
            gradient norm clipped at 10) or any ``pyro.optim.PyroOptim`` instance (an LR scheduler is
            stepped once per SVI step; ``ReduceLROnPlateau`` gets the loss).
        lr_decay: if set, the learning rate decays exponentially to ``lr * lr_decay`` at
            ``num_steps`` (ClippedAdam's ``lrd``, or ``pyro.optim.ExponentialLR`` around Adam), or
            under a ``time_budget`` along the fit's progress (:mod:`pyro_nf.training.schedule`).
            ``None``: a constant rate. The default does not apply to a ``PyroOptim`` instance.
        loss: ``None`` picks ``TraceEnum_ELBO`` when the model has sites marked for parallel
            enumeration (``config_enumerate``) and ``Trace_ELBO`` otherwise; a name from
            ``"Trace_ELBO"``, ``"TraceEnum_ELBO"``, ``"TraceMeanField_ELBO"``,
            ``"TraceGraph_ELBO"``; or an ``ELBO`` instance, used as is.
        num_particles: samples per ELBO estimate (for losses fit() builds), in one batched pass; a
            model that does not broadcast over a leading particle dimension (e.g. ``x @ w``) is
            detected before the first step and its particles run one by one, with a warning.
        time_budget: seconds this call may take (set-up included), or ``None``; the fit stops at
            ``num_steps`` or here, whichever comes first (``stop_reason`` says which), and the
            learning-rate decay and STL switch-over follow whichever budget binds.
        stl_after: from this fraction of the budget on, a flow guide whose layers all have an
            inverse (IAF, NICE, RealNVP, Glow, NSF; not planar; IAF only up to 16 latent
            dimensions, ``STL_MAX_SEQUENTIAL_DIM``: its D-pass inverse) is trained with the
            sticking-the-landing gradient (:mod:`pyro_nf.guides.stl`), then set back as it was;
            ``None`` never switches. A guide built with ``stl=True`` uses it throughout.
        init: ``"laplace"``: before the first step of a guide's first fit, a guide with an
            ``init_to_laplace`` method (the flows, ``meanfield``, ``fullrank``) starts from the
            model's Laplace Gaussian if that has a higher ELBO than its own start
            (:mod:`pyro_nf.guides.laplace`; not for enumerated, subsampled or data-parallel fits);
            ``FitResult.init`` says which start was kept. ``None``: the guide's own start.
        vectorize_particles: draw the particles in one vectorised pass (for losses fit() builds).
        seed: if given, ``pyro.set_rng_seed(seed)`` first: two fits with one seed, a fresh guide and
            the same param-store contents give bit-identical losses on CPU.
        progress: show progress on stderr: a tqdm bar with the smoothed ELBO (exponential moving
            average), learning rate and steps per second on a terminal; one line per 10% of the
            steps when stderr is not a terminal (logs); nothing when ``False``.
        early_stop: the convergence rule. The default, :class:`Converged`, stops once the guide
            matches the posterior to within Monte Carlo noise (the variance of the log-weights over the
            last 200 steps below 0.005; ``stop_reason == "converged"``; not in data-parallel fits, whose
            loss is averaged over ranks). ``True`` (``EarlyStop()`` defaults) or an :class:`EarlyStop`
            stops on an ELBO plateau instead (``"early_stop"``); ``None``/``False``: run to the budget.
        grad_clip: the default :class:`~pyro_nf.training.clipping.AdaptiveClip` rescales a gradient whose
            norm exceeds 3x the median of the last 100 steps' (direction kept; ``FitResult.num_clipped``
            counts them); ``True``: ``AdaptiveClip()``; ``None``/``False``: no clipping.
        checkpoint: path of a checkpoint file written atomically every ``checkpoint_every`` steps and
            at the end (see :mod:`pyro_nf.training.checkpoint`). It holds the guide's ``state_dict``, the
            unconstrained values of all parameters, optimizer and schedule state, RNG states, step,
            loss history, divergence-guard state; it loads with ``torch.load(weights_only=True)``.
        checkpoint_every: steps between checkpoints.
        resume: path of a checkpoint to continue from (usually the same as ``checkpoint``); call
            with the same model, guide type, arguments and options. The checkpoint's parameters,
            optimizer state (learning rate included) and RNG states replace the current ones, so the
            continued loss history is bit-identical to an uninterrupted run; ``seed`` is then
            ignored. A missing file raises ``FileNotFoundError``.
        max_recoveries: divergence guard budget. After a step whose loss or updated parameters are
            non-finite (or whose distributions reject nan/inf values), the last parameters verified
            to give a finite loss are restored, the optimizer moments reset and the learning rate
            multiplied by :data:`RECOVERY_LR_FACTOR` (0.5); the failed step is not recorded. One
            more divergence than ``max_recoveries`` raises :class:`FitDivergedError`.
        callback: called as ``callback(step, loss)`` after every completed step (after that
            step's checkpoint, if any, is written); returning ``True`` stops the fit with
            ``stop_reason == "callback"``. Use it for custom stopping rules, logging or tests.
        fast: ``None`` (default) runs the fast path (:mod:`pyro_nf.training.fast_elbo`: the same
            ``Trace_ELBO`` estimate from the guide's posterior and the model's log density, without
            per-step tracing, particles in one batched pass) where it applies, and Pyro's ``SVI``
            otherwise (enumeration, latent sites local to subsampled plates, dynamic structure, a
            ``loss`` given, an unsupported guide, ``vectorize_particles=False``); ``True`` requires
            it (``ValueError`` naming why not); ``False`` always uses ``SVI``. ``FitResult.path`` /
            ``path_reason`` and the progress output say which ran and why. Fits of at least 1000
            steps on one process record the fast step's operations once and replay them
            (:mod:`pyro_nf.training.replay`: the same losses and updates, bit for bit, checked).
        distributed: data-parallel SVI (:mod:`pyro_nf.training.distributed`; each rank passes its
            shard of the data): ``None`` turns it on in a process group of several processes, ``True``
            or a :class:`~pyro_nf.training.distributed.DataParallel` asks for it (any rank's callback
            ``True`` stops all).
        **model_kwargs: keyword arguments for model and guide.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: invalid options (e.g. ``num_steps < 1``).
        FitInputError: the model fails on its arguments, data hold NaN, or the guide does not fit
            the model.
        FitDivergedError: the divergence guard ran out of recoveries; it names the step, the
            learning rate and the sites with non-finite values (the guide keeps the last good
            parameters).
        CheckpointError: the ``resume`` file is corrupt, not plain data, or from another fit.
    """
    t0 = time.perf_counter()
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}")
    schedule = Schedule(num_steps, time_budget, stl_after)
    if isinstance(loss, ELBO) and num_particles == DEFAULT_NUM_PARTICLES:
        num_particles = 1  # the instance's own num_particles applies
    if isinstance(optimizer, PyroOptim) and lr_decay == DEFAULT_LR_DECAY:
        lr_decay = None  # the instance's own schedule applies
    # under a time budget fit() sets the decayed rate itself, from the progress
    manual_decay = lr_decay if time_budget is not None and lr_decay is not None else None
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1; got {checkpoint_every!r}")
    if max_recoveries < 0:
        raise ValueError(f"max_recoveries must be >= 0; got {max_recoveries!r}")
    if early_stop is True:
        early_stop = EarlyStop()
    elif early_stop is False:
        early_stop = None
    elif early_stop is not None and not isinstance(early_stop, EarlyStop | Converged):
        raise ValueError(f"early_stop must be None, a bool, an EarlyStop or a Converged; got {early_stop!r}")
    grad_clip = resolve_clip(grad_clip)
    setup.check_fit_options(num_particles=num_particles, seed=seed)
    check_checkpoint_target(checkpoint, resume)
    kwargs = model_kwargs
    group = resolve(distributed)  # None unless data-parallel
    if group is not None and isinstance(early_stop, Converged):
        early_stop = None  # its loss is an average over ranks: the variance rule does not apply
    progress = progress and (group is None or group.is_main)
    if seed is not None and resume is None:
        pyro.set_rng_seed(seed if group is None else group.rank_seed(seed))

    # --- set-up, all off the random stream ---------------------------------------------------
    model_trace = together(group, setup.trace_model, model, args, kwargs)
    model = model if group is None else group.prepare(model, model_trace)  # checks; scales the likelihood
    together(group, setup.setup_guide, guide, model_trace, args, kwargs)
    init_note = setup.initialise(
        init, model, guide, model_trace, args, kwargs, fresh=group is None and resume is None
    )
    elbo = setup.make_loss(loss, setup.uses_enumeration(model_trace), num_particles, vectorize_particles)
    setup.guess_plate_nesting(elbo, model, guide, args, kwargs)
    optim = setup.make_optimizer(optimizer, lr, None if manual_decay else lr_decay, num_steps)
    svi = SVI(model, guide, optim, elbo)
    fast_elbo, path_reason = None, "fast=False"
    if fast is not False:
        with isolated_rng():
            fast_elbo, path_reason = plan_fast_path(
                model,
                guide,
                args,
                kwargs,
                num_particles=num_particles,
                vectorize_particles=vectorize_particles,
                loss=loss,
            )
        if fast is True and fast_elbo is None:
            raise ValueError(f"fast=True but the fast path does not apply: {path_reason}")
    if num_particles > 1 and vectorize_particles and not isinstance(loss, ELBO):
        problem = setup.vectorization_problem(elbo, model, guide, args, kwargs)
        if problem:  # e.g. `x @ w` with w of shape (particles, D): draw the particles one by one
            vectorize_particles, fast_elbo = False, None
            elbo = setup.make_loss(loss, setup.uses_enumeration(model_trace), num_particles, False)
            setup.guess_plate_nesting(elbo, model, guide, args, kwargs)
            svi = SVI(model, guide, optim, elbo)
            path_reason = (
                f"the model does not broadcast over a leading particle dimension ({problem}), so its "
                f"{num_particles} particles run one by one; vectorise it or pass num_particles=1"
            )
            warnings.warn(f"fit: {path_reason}", stacklevel=2)
    path = "trace_elbo" if fast_elbo is None else "fast"
    particles = getattr(elbo, "num_particles", num_particles)  # draws per loss, for `Converged`
    store = pyro.get_param_store()
    named = dict(store.named_parameters())
    params = {n: named[n] for n in setup.param_names(model, guide, args, kwargs)}
    evaluate_loss = svi.evaluate_loss if group is None else group.attach(svi, params, guide)  # syncs grads
    param_list = list({id(p): p for p in params.values()}.values())  # a tensor may have two names
    clipper = GradClipper(grad_clip, param_list)  # does nothing when grad_clip is None
    svi.loss_and_grads = clipper.after(svi.loss_and_grads)  # SVI.step: gradients (ranks' mean), clip, update

    def fast_loss_and_grads(*_args: Any, **_kwargs: Any) -> float:
        value = fast_elbo.differentiable_loss()
        value.backward()
        return float(value.detach())

    def fast_evaluate_loss(*_args: Any, **_kwargs: Any) -> float:
        return fast_elbo.evaluate_loss()

    loss_and_grads = fast_loss_and_grads
    if fast_elbo is not None:  # the same loss and gradient averaging over ranks as SVI gets
        loss_and_grads = fast_loss_and_grads if group is None else group.synced(fast_loss_and_grads, params)
        if group is None and replay.worthwhile(num_steps, time_budget):  # record the step once, replay it
            loss_and_grads = replay.ReplayedGradient(fast_elbo, param_list)
        evaluate_loss = fast_evaluate_loss if group is None else group.synced(fast_evaluate_loss)

    def step_fn() -> float:
        """One SVI step; on the fast path ``SVI.step`` without the traces, one fused Adam update."""
        if fast_elbo is None:
            return float(svi.step(*args, **kwargs))
        value = loss_and_grads()
        clipper()
        fused_step(optim, param_list)
        for p in param_list:
            p.grad = None
        return value

    opt_name = (
        optimizer
        if isinstance(optimizer, str)
        else getattr(optim, "pt_optim_constructor", type(optim)).__name__
    )
    config = {"optimizer": opt_name, "loss": type(elbo).__name__, "num_particles": num_particles}
    if resume is None:  # a second fit of one guide continues its optimiser state
        setup.continue_moments(guide, optim, opt_name)
    stepper = None
    if isinstance(optim, PyroLRScheduler):
        plateau = optim.pt_scheduler_constructor is torch.optim.lr_scheduler.ReduceLROnPlateau
        stepper = (lambda loss_: optim.step(loss_)) if plateau else (lambda loss_: optim.step())

    losses: list[float] = []
    stop_reason: str | None = None
    stl_step: int | None = None
    stl_checked = stl_after is None
    guard = DivergenceGuard(
        params, max_recoveries, flat=lambda: flat_parameters(optim, param_list), order=param_list
    )
    if resume is not None:
        ckpt = together(group, load_checkpoint, resume, error=CheckpointError)
        apply_checkpoint(ckpt, guide, params, config, optim, guard, resume)
        losses = [float(v) for v in ckpt["losses"]]
        # a completed fit continues when asked for more steps; an early-stopped one stays stopped
        stop_reason = ckpt.get("stop_reason")
        stop_reason = stop_reason if stop_reason in ("early_stop", "converged") else None
        restore_rng(group, ckpt)
        if grad_clip is not None and ckpt.get("grad_clip") is not None:
            clipper.load_state_dict(ckpt["grad_clip"])
    start_step = step = len(losses)

    def write_checkpoint() -> None:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "losses": list(losses),
            "params": {n: p.detach().clone() for n, p in params.items()},
            "guard": guard.state_dict(),
            "guide_state": dict(guide.state_dict()) if isinstance(guide, torch.nn.Module) else {},
            "optim_state": optim.get_state(),
            "rng": capture_rng_state(),
            "early_stop": None if early_stop is None else vars(early_stop).copy(),
            "grad_clip": None if grad_clip is None else clipper.state_dict(),
            "stop_reason": stop_reason,
            "config": config,
            "seed": seed,
        }
        (save_checkpoint if group is None else group.save_checkpoint)(checkpoint, payload)

    # --- the loop ------------------------------------------------------------------------------
    bar = Progress(progress and stop_reason is None and step < num_steps, num_steps, step, path, path_reason)
    with warnings.catch_warnings():
        # Pyro warns on every NaN loss; here the guard handles them (and reports what it did)
        warnings.filterwarnings("ignore", message=r"Encountered (NaN|\+/-Inf)")
        try:
            while stop_reason is None and step < num_steps:
                guard.before_step()
                try:
                    value = step_fn()
                except KeyboardInterrupt:
                    guard.undo_step()
                    stop_reason = "interrupted"
                    break
                except (ValueError, RuntimeError) as err:
                    if not is_divergence_error(err):
                        raise
                    guard.last_error, value = err, math.nan
                if math.isfinite(value):
                    guard.verified()
                    if guard.finite():
                        losses.append(value)
                        step += 1
                        guard.completed(step)
                        if stepper is not None:
                            stepper(value)
                        if bar.enabled and step - 1 in (start_step, stl_step):  # traced at this step
                            bar.describe_step(replay.progress_note(loss_and_grads, path, group is not None))
                        bar.update(step, value, current_lr(optim, lr))
                        if manual_decay is not None:
                            factor = manual_decay ** schedule.progress(step)
                            factor *= RECOVERY_LR_FACTOR ** len(guard.recovery_steps)
                            for opt in setup.torch_optimizers(optim):
                                for group_ in opt.param_groups:
                                    group_["lr"] = lr * factor
                        if not stl_checked and schedule.wants_stl(step):
                            stl_checked = True
                            stl_step = step if switch_to_stl(guide) else None
                        if early_stop is not None and early_stop.should_stop(losses, particles):
                            stop_reason = "converged" if isinstance(early_stop, Converged) else "early_stop"
                        elif step < num_steps and schedule.out_of_time():
                            stop_reason = "time_budget"
                        if checkpoint is not None and step % checkpoint_every == 0:
                            write_checkpoint()
                        if callback is not None and any_rank(group, callback(step, value) is True):
                            stop_reason = "callback"
                        continue
                guard.recover(step, optim, lr, model, guide, args, kwargs)
            if stop_reason != "interrupted" and step > start_step:
                with isolated_rng():  # the last update is not yet verified by a loss: check it
                    try:
                        final = evaluate_loss(*args, **kwargs)
                    except (ValueError, RuntimeError) as err:
                        if not is_divergence_error(err):
                            raise
                        final = math.nan
                guard.final_check(final, step)
            stop_reason = stop_reason or "completed"
            if checkpoint is not None and stop_reason != "interrupted":
                write_checkpoint()  # records the stop reason (and a final-check restore)
        finally:
            if stl_step is not None:
                guide.stl = False
            bar.close(stop_reason or "error", step)
    setup.save_moments(guide, optim, opt_name)
    return FitResult(
        guide=guide,
        losses=losses,
        wall_seconds=time.perf_counter() - t0,
        num_steps=len(losses),
        stop_reason=stop_reason,
        num_recoveries=len(guard.recovery_steps),
        final_lr=current_lr(optim, lr),
        recovery_steps=list(guard.recovery_steps),
        seed=seed,
        optimizer=opt_name,
        loss=type(elbo).__name__,
        start_step=start_step,
        path=path,
        path_reason=path_reason,
        stl_step=stl_step,
        time_budget=time_budget,
        init=init_note,
        replay=replay.describe(loss_and_grads),
        num_clipped=clipper.num_clipped,
    )
