"""What the user watches while a sweep runs: one line per evaluation per run, and a table of every run.

Lines are plain text, so a ``ray job logs --follow`` stream reads the same as a terminal.
The table of every run is printed every ``table_every_s`` seconds; on a terminal it is a
live table (rich) that stays at the bottom and updates in place.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ray import tune


@dataclass
class RunProgress:
    name: str
    step: int = 0
    total: int = 0
    val: float = math.nan
    best: float = math.inf
    status: str = "queued"
    rate: float = 0.0  # steps per second over the last window
    last_at: float = field(default_factory=time.monotonic)

    @property
    def eta(self) -> str:
        if self.status != "running" or self.rate <= 0:
            return "-"
        return duration((self.total - self.step) / self.rate)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress_table(runs: list[RunProgress]) -> list[list[str]]:
    """Rows of (run, step, val, best, status, ETA): one place for the live table, the plain one and --status."""
    return [
        [r.name, f"{r.step}/{r.total}" if r.total else "-", "-" if math.isnan(r.val) else f"{r.val:.4f}",
         "-" if math.isinf(r.best) else f"{r.best:.4f}", r.status, r.eta]
        for r in runs
    ]


HEADER = ["run", "step", "val", "best val", "status", "ETA"]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(HEADER, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [HEADER, *rows])


class Console(tune.Callback):
    """One line per evaluation and per state change; the table of every run, live on a terminal."""

    def __init__(self, run_names: list[str], table_every_s: float = 60.0, live: bool | None = None):
        self.runs = {name: RunProgress(name) for name in run_names}
        self.table_every_s = table_every_s
        self.live = sys.stdout.isatty() if live is None else live
        self._live = None
        self._last_table = time.monotonic()

    # -- the table
    def setup(self, **info):
        if self.live:
            from rich.live import Live

            self._live = Live(self._rich_table(), refresh_per_second=2, transient=False)
            self._live.start()

    def _rich_table(self):
        from rich.table import Table

        table = Table(title="runs", title_justify="left", expand=False)
        for column in HEADER:
            table.add_column(column, justify="left" if column in ("run", "status") else "right")
        for row in progress_table(list(self.runs.values())):
            table.add_row(*row)
        return table

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._rich_table())
        elif time.monotonic() - self._last_table >= self.table_every_s:
            self._last_table = time.monotonic()
            print(plain_table(progress_table(list(self.runs.values()))), flush=True)

    def _say(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def on_experiment_end(self, trials, **info):
        if self._live is not None:
            self._live.update(self._rich_table())
            self._live.stop()
            self._live = None

    # -- Tune's events
    def _run(self, trial) -> RunProgress:
        return self.runs.setdefault(trial.config["job"]["run_name"], RunProgress(trial.config["job"]["run_name"]))

    def on_trial_start(self, iteration, trials, trial, **info):
        run = self._run(trial)
        run.status, run.last_at = "running", time.monotonic()
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result: dict[str, Any], **info):
        run = self._run(trial)
        now, step = time.monotonic(), int(result["step"])
        if step > run.step and run.step:
            run.rate = (step - run.step) / max(now - run.last_at, 1e-9)
        run.step, run.total, run.last_at, run.status = step, int(result["total_steps"]), now, "running"
        val = result.get("val_loss")
        if isinstance(val, float) and math.isfinite(val):
            run.val, run.best = val, min(run.best, val)
        self._say(line(run.name, result, run))
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        run = self._run(trial)
        run.status = "finished"
        self._say(f"[{run.name}] finished at step {run.step}/{run.total}, best val {run.best:.4f}")
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info):
        from orchestrator.history import trial_error

        run = self._run(trial)
        run.status = "failed"
        self._say(f"[{run.name}] FAILED: {trial_error(trial)}")
        self._refresh()


def line(name: str, result: dict[str, Any], run: RunProgress) -> str:
    """The one line an evaluation prints."""
    step, total = int(result["step"]), int(result["total_steps"])
    val = result.get("val_loss")
    if step == 0:
        return f"[{name}] step 0/{total}  val {val:.4f} before training"
    parts = [f"[{name}] step {step}/{total}"]
    if isinstance(val, float) and math.isfinite(val):
        parts.append(f"val {val:.4f} (best {run.best:.4f})")
    if isinstance(result.get("train_loss"), float):
        parts.append(f"train {result['train_loss']:.4f}")
    parts += [f"lr {result['lr']:.2e}", f"clip {result.get('clip_rate', 0):.0%}", f"{result['tokens_per_s']:,.0f} tok/s", f"ETA {run.eta}"]
    return "  ".join(parts)
