"""Tests for pyro_nf.fit: the loop, divergence guard, early stop, progress, checkpoints, resume."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, config_enumerate
from pyro.infer.autoguide import AutoDiagonalNormal, AutoIAFNormal, AutoNormal
from pyro.ops.indexing import Vindex

import pyro_nf
from pyro_nf.training import CheckpointError, EarlyStop, FitDivergedError, FitInputError, FitResult, fit
from pyro_nf.training.checkpoint import load_checkpoint

# ------------------------------------------------------------------------------------------------
# models


def funnel() -> None:
    """Neal's funnel in 10 dimensions."""
    log_scale = pyro.sample("log_scale", dist.Normal(0.0, 3.0))
    with pyro.plate("d", 9):
        pyro.sample("x", dist.Normal(0.0, torch.exp(log_scale / 2)))


def conjugate(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def other_model(y: torch.Tensor) -> None:
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(0.0, tau), obs=y)


def sized(y: torch.Tensor, n: int = 10) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", n):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


@config_enumerate
def mixture(y: torch.Tensor) -> None:
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        assign = pyro.sample("assign", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("y", dist.Normal(Vindex(locs)[..., assign], 1.0), obs=y)


Y = torch.full((20,), 3.0)


def finite_draws(model, guide, *args, n: int = 200) -> bool:
    draws = Predictive(model, guide=guide, num_samples=n)(*args)
    return all(bool(torch.isfinite(v).all()) for v in draws.values())


# ------------------------------------------------------------------------------------------------
# the loop


def test_result_fields_and_a_converged_posterior():
    r = fit(
        conjugate, AutoNormal(conjugate), Y, num_steps=400, lr=0.05, lr_decay=None, seed=0, progress=False
    )
    assert isinstance(r, FitResult)
    assert r.num_steps == len(r.losses) == 400
    assert r.stop_reason == "completed" and r.num_recoveries == 0
    assert r.loss == "Trace_ELBO" and r.optimizer == "adam" and r.final_lr == 0.05
    assert r.wall_seconds > 0 and r.start_step == 0
    assert r.elbo == pytest.approx(-sum(r.losses[-40:]) / 40)
    exact_mean = 3.0 * 20 / (20 + 1 / 100)
    assert r.guide.median()["mu"].item() == pytest.approx(exact_mean, abs=0.1)


@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoDiagonalNormal, AutoIAFNormal])
def test_pyro_guides_fit_on_the_funnel(guide_cls):
    r = fit(funnel, guide_cls(funnel), num_steps=30, seed=1, progress=False)
    assert len(r.losses) == 30 and all(map(torch.isfinite, torch.tensor(r.losses)))
    assert finite_draws(funnel, r.guide)


def _registered_guides() -> list[str]:
    try:
        from pyro_nf.guides.registry import available_guides
    except ImportError:  # registry not merged yet
        return []
    return available_guides()


def constrained(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.mark.parametrize("name", _registered_guides())
def test_every_registered_guide_fits_through_fit(name):
    from pyro_nf.guides.registry import make_guide

    y = torch.linspace(-1.0, 3.0, 15)
    r = fit(constrained, make_guide(name, constrained), y, num_steps=20, seed=0, progress=False)
    assert r.num_steps == 20 and r.stop_reason == "completed"
    assert all(map(torch.isfinite, torch.tensor(r.losses)))
    draws = Predictive(constrained, guide=r.guide, num_samples=100, return_sites=["mu", "sigma"])(y)
    assert torch.isfinite(draws["mu"]).all() and (draws["sigma"] > 0).all()


@pytest.mark.parametrize("num_particles", [1, 3])
def test_enumerated_model_gets_trace_enum_elbo(num_particles):
    y = torch.cat([torch.full((10,), -2.0), torch.full((10,), 2.0)])
    guide = AutoNormal(poutine.block(mixture, hide=["assign"]))
    r = fit(mixture, guide, y, num_steps=20, seed=0, progress=False, num_particles=num_particles)
    assert r.loss == "TraceEnum_ELBO" and all(map(torch.isfinite, torch.tensor(r.losses)))
    with pytest.raises(ValueError, match="enumerates"):
        fit(mixture, guide, y, num_steps=5, loss="Trace_ELBO", progress=False)


def test_one_seed_gives_identical_losses_and_another_does_not():
    def run(seed):
        pyro.clear_param_store()
        return fit(
            funnel, AutoIAFNormal(funnel, hidden_dim=[16]), num_steps=40, seed=seed, progress=False
        ).losses

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert first != other


@pytest.mark.parametrize("optimizer", ["adam", "clipped_adam"])
def test_lr_decay_reaches_lr_times_decay(optimizer):
    r = fit(
        conjugate,
        AutoNormal(conjugate),
        Y,
        num_steps=50,
        lr=0.02,
        optimizer=optimizer,
        lr_decay=0.1,
        seed=0,
        progress=False,
    )
    assert r.final_lr == pytest.approx(0.002, rel=1e-4)


def test_keyboard_interrupt_returns_partial_result():
    calls = {"n": 0}

    def impatient(y):
        calls["n"] += 1
        if calls["n"] == 15:  # a few set-up traces, then ~one call per step
            raise KeyboardInterrupt
        conjugate(y)

    r = fit(impatient, AutoNormal(impatient), Y, num_steps=100, seed=0, progress=False)
    assert r.stop_reason == "interrupted" and 0 < r.num_steps < 15
    assert finite_draws(conjugate, r.guide, Y)


# ------------------------------------------------------------------------------------------------
# divergence guard


def test_funnel_at_a_huge_lr_recovers_with_finite_draws_or_raises_documented_error():
    guide = AutoNormal(funnel)
    try:
        r = fit(funnel, guide, num_steps=200, lr=100.0, seed=0, progress=False)
    except FitDivergedError as err:
        assert f"step {err.step}" in str(err) and err.lr < 100.0 and err.sites
    else:
        assert r.num_recoveries >= 1 and r.final_lr < 100.0
        assert all(map(torch.isfinite, torch.tensor(r.losses)))
    assert finite_draws(funnel, guide, n=1000)


def test_exhausted_guard_raises_naming_step_lr_and_sites_and_keeps_finite_parameters():
    guide = AutoNormal(funnel)
    with pytest.raises(FitDivergedError) as info:
        fit(funnel, guide, num_steps=200, lr=1000.0, lr_decay=None, seed=0, progress=False, max_recoveries=0)
    err = info.value
    assert err.lr == 1000.0 and err.step > 0
    assert set(err.sites) & {"log_scale", "x"}
    msg = str(err)
    assert f"step {err.step}" in msg and "learning rate 1e+03" in msg
    assert all(f"'{site}'" in msg for site in err.sites)
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert finite_draws(funnel, guide)


# ------------------------------------------------------------------------------------------------
# bad input


def test_nan_in_observed_data_is_refused_naming_argument_and_site():
    y = Y.clone()
    y[3] = float("nan")
    with pytest.raises(FitInputError, match=r"'y'.*1 NaN of 20|1 NaN of 20.*'y'") as info:
        fit(conjugate, AutoNormal(conjugate), y, num_steps=5, progress=False)
    assert "site 'y'" in str(info.value)


def test_nan_in_data_is_refused_without_validation():
    y = Y.clone()
    y[0] = float("nan")
    with pyro.validation_enabled(False), pytest.raises(FitInputError, match="observed site 'y'"):
        fit(conjugate, AutoNormal(conjugate), y, num_steps=5, progress=False)


def test_arguments_that_break_the_models_shapes_are_reraised_naming_the_site():
    with pytest.raises(FitInputError, match="site 'obs'"):
        fit(sized, AutoNormal(sized), torch.zeros(5), num_steps=5, progress=False)
    r = fit(sized, AutoNormal(sized), torch.zeros(5), n=5, num_steps=3, progress=False)
    assert r.num_steps == 3  # model keywords pass through


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_num_steps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="num_steps"):
        fit(conjugate, AutoNormal(conjugate), Y, num_steps=bad, progress=False)


def test_guide_built_for_another_model_is_refused_naming_sites():
    with pytest.raises(FitInputError, match=r"another model.*\['tau'\].*\['mu'\]"):
        fit(conjugate, AutoNormal(other_model), Y, num_steps=5, progress=False)
    with pytest.raises(FitInputError, match="built for this model"):
        fit(conjugate, AutoNormal(funnel), Y, num_steps=5, progress=False)


# ------------------------------------------------------------------------------------------------
# progress


def _read_all(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            ready, _, _ = select.select([fd], [], [], 5.0)
            if not ready:
                return
            data = os.read(fd, 65536)
        except OSError:  # EIO once the terminal side is closed
            return
        if not data:
            return
        chunks.append(data)


@pytest.mark.parametrize("rows_cols", [(24, 100), (0, 0)], ids=["100-columns", "unsized"])
def test_progress_bar_is_drawn_on_a_terminal(monkeypatch, rows_cols):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *rows_cols, 0, 0))
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(master, chunks))
    reader.start()
    with open(slave, "w", closefd=True) as tty:
        assert tty.isatty()
        monkeypatch.setattr(sys, "stderr", tty)
        fit(conjugate, AutoNormal(conjugate), Y, num_steps=40, seed=0)
        monkeypatch.undo()
    reader.join(timeout=20)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert "fit: 100%" in text and "40/40" in text
    assert "elbo=" in text and "step/s" in text and "\r" in text


def test_progress_is_one_line_per_tenth_off_a_terminal_and_silent_when_disabled(capfd):
    fit(conjugate, AutoNormal(conjugate), Y, num_steps=200, seed=0)
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("fit: step 200/200 (100%) | elbo ")
    assert "steps/s" in lines[0]
    fit(conjugate, AutoNormal(conjugate), Y, num_steps=200, seed=0, progress=False)
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------------------------------------
# early stopping


def test_early_stop_triggers_on_a_converged_fit():
    r = fit(
        conjugate,
        AutoNormal(conjugate),
        Y,
        num_steps=3000,
        lr=0.05,
        seed=0,
        progress=False,
        early_stop=EarlyStop(window=50, rtol=1e-3),
    )
    assert r.stop_reason == "early_stop" and 100 <= r.num_steps < 3000


def test_early_stop_does_not_trigger_on_a_still_improving_fit():
    far = torch.full((100,), 50.0)  # the guide starts near 0: every window improves a lot
    r = fit(
        conjugate,
        AutoNormal(conjugate),
        far,
        num_steps=300,
        lr=0.01,
        lr_decay=None,
        seed=0,
        progress=False,
        early_stop=EarlyStop(window=50, rtol=1e-3),
    )
    assert r.stop_reason == "completed" and r.num_steps == 300
    assert sum(r.losses[:50]) > 1.05 * sum(r.losses[-50:])  # it was indeed still improving


# ------------------------------------------------------------------------------------------------
# checkpoints (in process)


def test_checkpoint_is_plain_data_and_resume_extends_a_fit_exactly(tmp_path):
    path = tmp_path / "fit.pt"
    ref = fit(
        funnel, AutoIAFNormal(funnel, hidden_dim=[16]), num_steps=60, seed=3, progress=False, lr_decay=None
    ).losses
    pyro.clear_param_store()
    first = fit(
        funnel,
        AutoIAFNormal(funnel, hidden_dim=[16]),
        num_steps=35,
        lr_decay=None,
        seed=3,
        progress=False,
        checkpoint=path,
        checkpoint_every=10,
    )
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 35 and raw["stop_reason"] == "completed" and len(raw["losses"]) == 35
    pyro.clear_param_store()
    pyro.set_rng_seed(12345)  # the checkpoint's RNG state must win over the current one
    second = fit(
        funnel,
        AutoIAFNormal(funnel, hidden_dim=[16]),
        num_steps=60,
        progress=False,
        resume=path,
        lr_decay=None,
    )
    assert second.start_step == 35 and first.losses == ref[:35]
    assert second.losses == ref


def _real_checkpoint(path: Path) -> dict:
    fit(conjugate, AutoNormal(conjugate), Y, num_steps=5, seed=0, progress=False, checkpoint=path)
    pyro.clear_param_store()
    return torch.load(path, weights_only=True)


class _PlantsADirectory:
    def __init__(self, where: str) -> None:
        self.where = where

    def __reduce__(self):
        return (os.mkdir, (self.where,))


def test_checkpoint_holding_a_pickled_callable_is_refused_without_running_it(tmp_path):
    path, marker = tmp_path / "fit.pt", tmp_path / "pwned"
    payload = _real_checkpoint(path)
    payload["losses"] = _PlantsADirectory(str(marker))
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="nothing in it was executed"):
        fit(conjugate, AutoNormal(conjugate), Y, num_steps=10, progress=False, resume=path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: unsafe loading would run it
    assert marker.is_dir()


def test_truncated_foreign_and_mismatched_checkpoints_are_refused(tmp_path):
    path = tmp_path / "fit.pt"
    _real_checkpoint(path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a pyro_nf fit checkpoint"):
        load_checkpoint(path)
    path.write_bytes(good)
    with pytest.raises(CheckpointError, match="optimizer='adam'"):
        fit(
            conjugate,
            AutoNormal(conjugate),
            Y,
            num_steps=10,
            optimizer="clipped_adam",
            progress=False,
            resume=path,
        )
    with pytest.raises(CheckpointError, match="other parameters"):
        fit(other_model, AutoNormal(other_model), Y, num_steps=10, progress=False, resume=path)
    with pytest.raises(FileNotFoundError):
        fit(conjugate, AutoNormal(conjugate), Y, num_steps=10, progress=False, resume=tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------
# a fit killed with SIGKILL, then resumed, equals an uninterrupted one bit for bit

_JOB = '''
import io, json, os, sys, time
import pyro, pyro.distributions as dist, torch
from pyro.infer.autoguide import AutoIAFNormal
from pyro_nf.training.loop import fit

def model(y):
    shift = pyro.param("shift", torch.tensor(0.5), constraint=dist.constraints.positive)
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu + shift, sigma), obs=y)

def _pause_here(tag):
    """Signal the parent test, then sleep until it kills this process."""
    with open(os.environ["JOB_SIGNAL_FILE"], "w") as fh:
        fh.write(tag)
    while True:
        time.sleep(60)

def _install_pauses():
    """Test-side seams (the library has none): pause after a given step via fit()'s callback, or
    halfway through writing the checkpoint of a given step by wrapping the checkpoint writer."""
    from pyro_nf.training import checkpoint as ckpt_module
    write = ckpt_module._write_synced
    at_write = os.environ.get("JOB_PAUSE_IN_WRITE")
    if at_write is not None:
        def half_write(path, data):
            if torch.load(io.BytesIO(data), weights_only=True)["step"] == int(at_write):
                with open(path, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                _pause_here("write")
            write(path, data)
        ckpt_module._write_synced = half_write
    at_step = os.environ.get("JOB_PAUSE_AT_STEP")
    if at_step is None:
        return None
    return lambda step, loss: _pause_here("step") if step == int(at_step) else None

def run(checkpoint=None, resume=None, callback=None):
    y = torch.linspace(-1.0, 3.0, 20)
    guide = AutoIAFNormal(model, hidden_dim=[8], num_transforms=2)
    result = fit(model, guide, y, num_steps=100, lr=0.02, lr_decay=0.5, seed=11, progress=False,
                 checkpoint=checkpoint, checkpoint_every=10, resume=resume, callback=callback)
    params = {n: p.detach().flatten().tolist() for n, p in pyro.get_param_store().named_parameters()}
    return {"losses": result.losses, "params": params, "start_step": result.start_step}

if __name__ == "__main__":
    torch.set_default_dtype(getattr(torch, sys.argv[1]))
    pyro.enable_validation(True)
    ckpt, out = sys.argv[2], sys.argv[3]
    callback = _install_pauses()
    state = run(checkpoint=ckpt, resume=ckpt if os.path.exists(ckpt) else None, callback=callback)
    with open(out, "w") as fh:
        json.dump(state, fh)
'''


def _run_job(tmp_path: Path, env_extra: dict[str, str], *, killed: bool) -> dict | None:
    signal_file = tmp_path / "paused"
    signal_file.unlink(missing_ok=True)
    out = tmp_path / "out.json"
    # the job imports the pyro_nf this test imports (not whichever one the interpreter has installed)
    root = str(Path(pyro_nf.__file__).resolve().parents[1])
    path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "JOB_SIGNAL_FILE": str(signal_file), "PYTHONPATH": path, **env_extra}
    dtype = str(torch.get_default_dtype()).removeprefix("torch.")
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "job.py"), dtype, str(tmp_path / "fit.pt"), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if not killed:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()
        return json.loads(out.read_text())
    deadline = time.monotonic() + 180
    while not signal_file.exists():
        if proc.poll() is not None:
            pytest.fail(f"job ended before its pause point: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "job never reached its pause point"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return None


def test_fit_killed_at_several_points_then_resumed_matches_an_uninterrupted_run(tmp_path):
    (tmp_path / "job.py").write_text(_JOB)
    sys.path.insert(0, str(tmp_path))
    try:
        import job  # the same code as the subprocesses run, uninterrupted, in this process

        reference = job.run()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("job", None)
    ckpt = tmp_path / "fit.pt"

    # 1. killed between checkpoints (at step 37; the last checkpoint holds step 30)
    _run_job(tmp_path, {"JOB_PAUSE_AT_STEP": "37"}, killed=True)
    assert load_checkpoint(ckpt)["step"] == 30

    # 2. resumed, then killed halfway through writing the step-60 checkpoint
    _run_job(tmp_path, {"JOB_PAUSE_IN_WRITE": "60"}, killed=True)
    assert load_checkpoint(ckpt)["step"] == 50  # the previous checkpoint is intact
    partial = tmp_path / "fit.pt.tmp"
    assert 0 < partial.stat().st_size < ckpt.stat().st_size
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(partial)

    # 3. resumed, then killed right after the step-80 checkpoint completed
    _run_job(tmp_path, {"JOB_PAUSE_AT_STEP": "80"}, killed=True)
    assert load_checkpoint(ckpt)["step"] == 80

    # 4. resumed to the end
    resumed = _run_job(tmp_path, {}, killed=False)
    assert resumed["start_step"] == 80
    assert resumed["losses"] == reference["losses"]
    assert resumed["params"] == reference["params"]
    assert len(resumed["losses"]) == 100
