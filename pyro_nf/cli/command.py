"""The ``pyro-nf`` command: list guides and examples, fit one guide, compare several.

Usage::

    pyro-nf list
    pyro-nf fit funnel --guide iaf --steps 2000 --out fit_funnel/
    pyro-nf compare eight_schools_centered --out report/
    pyro-nf compare my_models.py:model --data data.csv --guides meanfield,maf --reference nuts

``MODEL`` is a built-in example or ``path/to/file.py:model_fn``; ``--data`` (``.csv`` columns or
``.npz`` arrays) supplies the model's keyword arguments by name. Bad input gives one line
``pyro-nf: error: ...`` on stderr and exit status 2; an unexpected failure gives one line and
status 1 (``--traceback`` shows the full trace).

Example:
    >>> main(["compare", "no_such_model"])  # one line on stderr, exit status 2
    2
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pyro_nf.cli.loading import InputError, ModelSpec, _one_line, check_model, load_model

__all__ = ["main"]

_PROG = "pyro-nf"


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors raise :class:`InputError` (one line, no usage)."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _learning_rate(text: str) -> float:
    value = _positive_float(text)
    if not value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a learning rate in (0, 1], got {text}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    from pyro_nf.comparison import DEFAULT_TIME_BUDGET

    p.add_argument("model", metavar="MODEL", help="built-in example name or path/to/file.py:model_fn")
    p.add_argument("--data", metavar="FILE", help=".csv or .npz: model keyword arguments by name")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, an integer >= 0 (default 0)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out folder that is not an earlier pyro-nf report",
    )
    p.add_argument(
        "--lr",
        type=_learning_rate,
        default=None,
        help="initial Adam learning rate (default 0.01, decaying to a tenth)",
    )
    p.add_argument(
        "--num-samples",
        type=_positive_int,
        default=4000,
        help="posterior draws saved per guide (default 4000: they feed the sd and IQR ratios)",
    )
    p.add_argument(
        "--diagnose-samples",
        type=_positive_int,
        default=40_000,
        help="importance samples for k-hat / ESS / IW-ELBO (default 40000)",
    )
    p.add_argument(
        "--time-budget",
        type=_positive_float,
        default=DEFAULT_TIME_BUDGET,
        metavar="SECONDS",
        help=f"seconds per guide; each fit stops at --steps or here (default {DEFAULT_TIME_BUDGET:g})",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: faster than several for the small networks of most models)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--traceback", action="store_true", help="show the full trace of unexpected errors")


def _build_parser() -> argparse.ArgumentParser:
    from pyro_nf.comparison import DEFAULT_GUIDES, DEFAULT_NUM_STEPS

    parser = _Parser(prog=_PROG, description="Normalizing-flow guides for Pyro: fit and compare.")
    sub = parser.add_subparsers(dest="command", metavar="{list,fit,compare}", required=True)
    sub.add_parser("list", help="list the guides and the built-in examples")

    fit = sub.add_parser("fit", help="fit one guide; write draws, loss plot and diagnostics")
    _common(fit)
    fit.add_argument("--guide", default="iaf", help="guide name (default iaf; see `pyro-nf list`)")
    fit.add_argument(
        "--steps",
        type=_positive_int,
        default=DEFAULT_NUM_STEPS,
        help=f"SVI steps (default {DEFAULT_NUM_STEPS})",
    )
    fit.add_argument("--out", default="pyro_nf_fit", help="output folder (default pyro_nf_fit)")

    cmp = sub.add_parser("compare", help="fit several guides and write a comparison report")
    _common(cmp)
    cmp.add_argument(
        "--guides",
        default=",".join(DEFAULT_GUIDES),
        help=f"comma-separated guide names (default {','.join(DEFAULT_GUIDES)})",
    )
    cmp.add_argument(
        "--steps",
        type=_positive_int,
        default=DEFAULT_NUM_STEPS,
        help=f"SVI steps per guide (default {DEFAULT_NUM_STEPS})",
    )
    cmp.add_argument(
        "--reference",
        default="auto",
        metavar="auto|none|nuts|FILE.nc",
        help="auto: the example's shipped reference (none for your own model); "
        "nuts: Pyro NUTS, 500 warm-up + 1000 draws; FILE.nc: InferenceData",
    )
    cmp.add_argument(
        "--reparam",
        choices=("learnable", "noncentred"),
        default=None,
        help="fit every guide to the model with its location-scale sites centred by a learnt amount "
        "(learnable) or non-centred; reports stay on the model's own sites (default: as written)",
    )
    cmp.add_argument("--vars", default=None, help="comma-separated variables for the pair plot")
    cmp.add_argument("--out", default="pyro_nf_report", help="output folder (default pyro_nf_report)")
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    from pyro_nf.comparison import RECOMMENDED_GUIDE, available_guides
    from pyro_nf.examples import available_examples, get_example

    print("guides:")
    for name in available_guides():
        print(f"  {name}" + ("  (recommended flow)" if name == RECOMMENDED_GUIDE else ""))
    print("examples:")
    for name in available_examples():
        desc = " ".join(str(getattr(get_example(name), "description", "")).split())
        print(f"  {name:<28} {desc[:90]}")
    return 0


def _check_guide_names(names: Sequence[str]) -> None:
    from pyro_nf.comparison import GUIDES

    if not names:
        raise InputError(f"no guide given; known: {', '.join(GUIDES.names())}")
    try:
        GUIDES.check(names)
    except ValueError as e:
        raise InputError(str(e)) from None
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise InputError(f"guide(s) named more than once: {', '.join(repeated)}")


def _check_out(args: argparse.Namespace) -> None:
    from pyro_nf.comparison.folder import check_folder

    try:
        check_folder(args.out, overwrite=args.overwrite)
    except ValueError as e:
        raise InputError(f"--out: {e}") from e


def _load(args: argparse.Namespace) -> ModelSpec:
    spec = load_model(args.model, args.data)
    check_model(spec.model, spec.data, spec.name)
    return spec


def _fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from pyro_nf.comparison import DEFAULT_FIT_KWARGS

    kwargs: dict[str, Any] = {**DEFAULT_FIT_KWARGS, "num_steps": args.steps, "time_budget": args.time_budget}
    if args.lr is not None:
        kwargs["lr"] = args.lr
    return kwargs


def _cmd_fit(args: argparse.Namespace) -> int:
    import pyro

    from pyro_nf.comparison import fit_and_evaluate, plots
    from pyro_nf.comparison.folder import finish_folder, start_folder

    _check_guide_names([args.guide])
    _check_out(args)
    spec = _load(args)
    pyro.clear_param_store()
    fitted = fit_and_evaluate(
        spec.model,
        args.guide,
        seed=args.seed,
        fit_kwargs={"progress": not args.quiet, **_fit_kwargs(args)},
        num_samples=args.num_samples,
        diagnose_samples=args.diagnose_samples,
        **spec.data,
    )
    result, idata, diag = fitted.fit, fitted.idata, fitted.diagnosis
    out = start_folder(args.out, overwrite=args.overwrite)
    idata.to_netcdf(str(out / f"{args.guide}.nc"))
    plots.save_figure(plots.plot_elbo({args.guide: result}), out / "loss.png")
    summary = {
        "model": spec.name,
        "guide": args.guide,
        "khat": float(diag.khat),
        "verdict": str(diag.verdict),
        "ess": float(diag.ess),
        "elbo": float(diag.elbo),
        "iwelbo": float(diag.iwelbo),
        "num_draws": int(diag.num_draws),
        "num_steps": len(result.losses),
        "stop_reason": str(result.stop_reason),
        "fit_seconds": float(result.wall_seconds),
    }
    (out / "diagnostics.json").write_text(json.dumps(summary, indent=2) + "\n")
    finish_folder(out, [f"{args.guide}.nc", "loss.png", "diagnostics.json"], kind="fit")
    print(
        f"{spec.name} / {args.guide}: k-hat {diag.khat:.2f}, ESS {diag.ess:.0f}, "
        f"ELBO {diag.elbo:.3f}, IW-ELBO {diag.iwelbo:.3f}; wrote {out}/\n{diag.verdict}"
    )
    return 0


def _reference(args: argparse.Namespace, spec: ModelSpec) -> Any:
    from pyro_nf.comparison import Reference, latent_supports

    choice = args.reference
    if choice == "none":
        return None
    if choice == "auto":
        return Reference.from_example(spec.example, seed=args.seed) if spec.example else None
    if choice == "nuts":
        return "nuts"
    path = Path(choice)
    if not path.is_file():
        raise InputError(
            f"--reference must be auto, none, nuts or an existing .nc file; {choice!r} is none of these"
        )
    import arviz as az

    try:
        idata = az.from_netcdf(str(path))
        ref = Reference.from_idata(idata, source=f"draws from {path.name}")
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot read reference {path}: {_one_line(e)}") from e
    latent = set(latent_supports(spec.model, **spec.data))
    if not latent & set(ref.summary):
        raise InputError(
            f"reference {path} has none of the model's latent sites ({', '.join(sorted(latent))})"
        )
    return ref


def _cmd_compare(args: argparse.Namespace) -> int:
    from pyro_nf.comparison import compare

    guides = [g.strip() for g in args.guides.split(",") if g.strip()]
    _check_guide_names(guides)
    _check_out(args)
    spec = _load(args)
    reference = _reference(args, spec)
    var_names = [v.strip() for v in args.vars.split(",") if v.strip()] if args.vars else None
    if var_names:
        from pyro_nf.comparison import latent_supports

        latent = latent_supports(spec.model, **spec.data)
        bad = [v for v in var_names if v not in latent]
        if bad:
            raise InputError(
                f"--vars: no latent site(s) {', '.join(bad)} in {spec.name} "
                f"(latent sites: {', '.join(latent)})"
            )
    result = compare(
        spec.model,
        guides=guides,
        fit_kwargs=_fit_kwargs(args),
        reference=reference,
        seed=args.seed,
        num_samples=args.num_samples,
        diagnose_samples=args.diagnose_samples,
        progress=not args.quiet,
        model_name=spec.name,
        var_names=var_names,
        reparam=args.reparam,
        **spec.data,
    )
    report = result.save(args.out, overwrite=args.overwrite)
    cols = [
        c
        for c in ("khat", "verdict", "iwelbo", "sd_ratio_worst", "w1_unconstrained", "ms_per_step")
        if c in result.table
    ]
    print(result.table[cols].to_string(float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {report}")
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyro-nf`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Example:
        >>> main(["fit", "no_such_model"])
        2
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    import matplotlib

    matplotlib.use("Agg")
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except InputError as e:
        return _fail(str(e), 2)
    except SystemExit as e:  # --help / --version: argparse printed and asked to exit
        return int(e.code or 0) if not isinstance(e.code, str) else _fail(e.code, 2)
    from pyro_nf.comparison import FitInputError

    commands = {"list": _cmd_list, "fit": _cmd_fit, "compare": _cmd_compare}
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return commands[args.command](args)
    except (InputError, FitInputError) as e:  # the model cannot be fitted on this data
        return _fail(_one_line(e), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # e.g. `pyro-nf list | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # never show a user a traceback unless asked
        if getattr(args, "traceback", False):
            raise
        return _fail(
            f"unexpected {type(e).__name__}: {_one_line(e)} (rerun with --traceback for the details)", 1
        )


if __name__ == "__main__":
    sys.exit(main())
