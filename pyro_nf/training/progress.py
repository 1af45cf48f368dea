"""Progress output of :func:`pyro_nf.fit`: a tqdm bar on a terminal, one line per 10% of the steps
otherwise; both name the path the steps run on (fast ELBO or Pyro's ``SVI``) and whether the fast step
is replayed (:mod:`pyro_nf.training.replay`), and, once, why."""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm


class Progress:
    """tqdm bar on a TTY; otherwise one line per ~10% of the steps; nothing when disabled."""

    def __init__(
        self, enabled: bool, total: int, initial: int, path: str = "trace_elbo", reason: str = ""
    ) -> None:
        self.stream, self.total, self.ema = sys.stderr, total, None
        self.path, self.note = path, f"path {path}" + (f" ({reason})" if reason else "")
        self.enabled, self.step_kind, self.step_note = enabled, "", ""
        self.bar, self.every, self.t0, self.initial = None, 0, time.perf_counter(), initial
        if not enabled:
            return
        if hasattr(self.stream, "isatty") and self.stream.isatty():
            try:  # a pseudo-terminal may report a 0 x 0 size: tqdm would then draw nothing
                size = os.get_terminal_size(self.stream.fileno())
                sized = size.columns > 0 and size.lines > 0
            except (OSError, ValueError, AttributeError):
                sized = False
            self.bar = tqdm(
                total=total,
                initial=initial,
                file=self.stream,
                desc="fit",
                unit="step",
                dynamic_ncols=sized,
                ncols=None if sized else 100,
                nrows=None if sized else 20,
            )
        else:
            self.every = max(1, total // 10)

    def describe_step(self, note: str) -> None:
        """How the fast path's step runs, e.g. ``"replayed (1 trace(s), 0.3 s)"`` or ``"eager (why)"``:
        shown as ``path=fast/replayed`` on the bar and, with the reason, on the next log line."""
        if not note:
            return
        kind = note.split(" ", 1)[0]
        if kind == self.step_kind:  # a re-trace (the STL switch): the same kind of step, said once
            return
        self.step_kind, self.step_note = kind, note
        self.note = f"{self.note}; step {note}"

    def update(self, step: int, loss: float, lr: float) -> None:
        self.ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss
        if self.bar is not None:
            path = f"{self.path}/{self.step_kind}" if self.step_kind else self.path
            self.bar.set_postfix_str(f"elbo={-self.ema:.4g}, lr={lr:.3g}, path={path}", refresh=False)
            self.bar.update(1)
        elif self.every and (step % self.every == 0 or step == self.total):
            rate = (step - self.initial) / max(time.perf_counter() - self.t0, 1e-9)
            print(
                f"fit: step {step}/{self.total} ({100 * step // self.total}%) | elbo "
                f"{-self.ema:.4g} | {rate:.1f} steps/s | lr {lr:.3g} | {self.note}",
                file=self.stream,
                flush=True,
            )
            # the reasons once, on the first line
            self.note = f"path {self.path}" + (f", step {self.step_kind}" if self.step_kind else "")

    def close(self, reason: str, step: int) -> None:
        if self.bar is not None:
            self.bar.close()
            if reason != "completed":
                print(f"fit: stopped at step {step} ({reason})", file=self.stream, flush=True)
        elif self.every and reason != "completed":
            print(f"fit: stopped at step {step} ({reason})", file=self.stream, flush=True)
