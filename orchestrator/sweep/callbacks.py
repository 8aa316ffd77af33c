"""The sweep's Tune callbacks: each run's record in the experiment folder, the console, TensorBoard and MLflow.

- :class:`History` keeps each run's evaluations and state in its folder in storage
  (:class:`~orchestrator.folder.ExperimentFolder`), beside its checkpoints. Tune rewrites a
  trial's own result log when a relaunched sweep restarts it, so the sweep keeps its own
  record: every reported evaluation (a step redone after a failure shows up twice; readers
  keep the latest), and ``running``, ``finished`` or ``failed`` with the error, so
  ``--status`` and ``--report`` can tell from storage alone, from any machine.
- :class:`Console` prints one line per evaluation and per state change, with the table of
  every run, live on a terminal. A worker's own messages (its data, a resume, a smaller
  micro-batch) arrive as ``notes`` in its results and are printed here, as ``[run] ...``
  lines: plain text, with no process prefix, wherever the output goes.
- :class:`TensorBoard` writes each run's curves into its folder; :func:`mlflow_callback` is
  Ray's MLflow logger for the same curves, when the spec asks for it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import LoggerCallback

from contract.report import Report
from orchestrator.folder import ExperimentFolder
from orchestrator.results.progress import HEADER, RunProgress, line, plain_table, progress_table
from orchestrator.spec import TrackingSpec


def run_name(trial) -> str:
    return trial.config["job"]["run_name"]


class History(tune.Callback):
    """Appends every report of every trial to its run's history, and records its state."""

    def __init__(self, folder: ExperimentFolder):
        self.folder = folder
        self.reports: dict[str, list[Report]] = {}
        self.started: dict[str, float] = {}  # when this driver started each run's trial: start-up is measured from it

    def _save(self, trial, write, value: Any) -> None:
        try:
            write(run_name(trial), value)
        except OSError as err:  # kept in memory; the next result writes everything again
            print(f"[{run_name(trial)}] warning: not saved yet, storage unavailable: {err}", flush=True)

    def _state(self, trial, state: str, **extra: Any) -> None:
        now = time.time()
        started = self.started.setdefault(run_name(trial), now)
        self._save(trial, self.folder.write_state, {"state": state, "since": now, "started": started, **extra})

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[run_name(trial)] = time.time()
        self._state(trial, "running")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name, report = run_name(trial), Report.from_result(result)  # the record's own fields, whatever Tune added
        if name not in self.reports:  # first result since this driver started: continue what is saved
            self.reports[name] = self.folder.history(name)
        reports = self.reports[name]
        restored = report.restored  # the evaluation a resumed run restarted from, from its checkpoint
        if restored is not None and all(r.step != restored.step for r in reports):
            reports.append(restored)  # lost with a driver that died before it could record it
        reports.append(report.model_copy(update={"restored": None}))  # kept once, as its own row
        self._save(trial, self.folder.write_history, reports)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._state(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._state(trial, "failed", error=trial_error(trial))


def trial_error(trial) -> str:
    """The last line of a failed trial's error (the exception's message).

    Read from the trial's local folder: when Tune reports the error, the copy in storage
    is not synced yet.
    """
    local = Path(trial.error_file) if trial.error_file else None
    try:
        text = local.read_text() if local is not None and local.is_file() else str(trial.get_error() or "")
    except OSError as err:  # the storage copy may be what failed
        return f"(error file unreadable: {err})"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


class Console(tune.Callback):
    """One line per evaluation and per state change; the table of every run, live on a terminal."""

    def __init__(
        self, folder: ExperimentFolder, run_names: list[str], table_every_s: float = 60.0, live: bool | None = None
    ):
        self.folder = folder
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

    def _say(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    def on_experiment_end(self, trials, **info):
        if self._live is not None:
            self._live.update(self._rich_table())
            self._live.stop()
            self._live = None

    # -- Tune's events
    def _run(self, trial) -> RunProgress:
        return self.runs.setdefault(run_name(trial), RunProgress(run_name(trial)))

    def on_trial_start(self, iteration, trials, trial, **info):
        run = self._run(trial)
        run.status, run.last_at = "running", time.monotonic()
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result: dict[str, Any], **info):
        run, report = self._run(trial), Report.from_result(result)
        for note in report.notes:  # the worker's own messages, before the evaluation they came with
            self._say(f"[{run.name}] {note}")
        now, step = time.monotonic(), report.step
        if step > run.step and run.step:
            run.rate = (step - run.step) / max(now - run.last_at, 1e-9)
        run.step, run.total, run.last_at, run.status = step, report.total_steps, now, "running"
        run.node = report.node_id or run.node
        if report.val_loss is not None:
            run.val, run.best = report.val_loss, min(run.best, report.val_loss)
        self._say(line(run.name, report, run))
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        run = self._run(trial)
        run.status = "finished"
        self._say(f"[{run.name}] finished at step {run.step}/{run.total}, best val {run.best:.4f}")
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info):
        run = self._run(trial)
        run.status = "failed"
        self._say(f"[{run.name}] FAILED: {trial_error(trial)} (traceback: {self.folder.error_file(run.name)})")
        self._refresh()


# ----------------------------------------------------------------- tracking

# Each curve a person compares, under the name TensorBoard and MLflow show it, from the report
CURVES: dict[str, Callable[[Report], float | None]] = {
    "loss/val": lambda r: r.val_loss,
    "loss/train": lambda r: r.train_loss,
    "optim/lr": lambda r: r.lr,
    "optim/grad_norm": lambda r: r.grad_norm,
    "optim/clip_rate": lambda r: r.clip_rate,
    "speed/tokens_per_s": lambda r: r.tokens_per_s,
    "speed/mfu": lambda r: r.mfu,
}


def curves(result: dict[str, Any]) -> dict[str, float]:
    """The curves' values in a result (those it has), under their tracking names."""
    report = Report.from_result(result)
    return {tag: value for tag, of in CURVES.items() if (value := of(report)) is not None}


class TensorBoard(LoggerCallback):
    """Writes each run's curves with tensorboardX into its trial folder, which Tune syncs to storage.

    Tune's own TensorBoard logger would also log every list in a result as a histogram
    (per-document losses) under ``ray/tune/`` names; this one writes the curves a person
    compares, under the names they expect, so ``tensorboard --logdir <storage.path>/<name>``
    shows every run of the sweep side by side.
    """

    def __init__(self) -> None:
        from tensorboardX import SummaryWriter

        self._writer_cls = SummaryWriter
        self._writers: dict[Any, Any] = {}

    def log_trial_start(self, trial) -> None:
        if trial not in self._writers:
            trial.init_local_path()
            self._writers[trial] = self._writer_cls(trial.local_path, flush_secs=10)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        self.log_trial_start(trial)
        writer, step = self._writers[trial], Report.from_result(result).step
        for tag, value in curves(result).items():
            writer.add_scalar(tag, value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial, None)
        if writer is not None:
            writer.close()


def mlflow_callback(tracking: TrackingSpec, experiment: str):
    """Ray's MLflow logger for ``tracking`` (one MLflow run per sweep run, the resolved job as params,
    the curves as metrics), or None when no tracking URI is set. Needs the `tracking` extra."""
    if tracking.mlflow_uri is None:
        return None
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.result import TRAINING_ITERATION

    class Curves(MLflowLoggerCallback):
        """Logs the curves TensorBoard gets, at the optimizer step, instead of every field of every result
        (Ray's logger would write the flattened config as metrics, one store write each, at every evaluation)."""

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            # Ray's logger takes the step from timesteps_total, else training_iteration: here, the optimizer step
            step = Report.from_result(result).step
            super().log_trial_result(iteration, trial, {**curves(result), TRAINING_ITERATION: step})

    callback = Curves(
        tracking_uri=tracking.mlflow_uri,
        experiment_name=tracking.mlflow_experiment or experiment,
        tags={"plateau_sweep.experiment": experiment},
    )
    # after mlflow's import (in the constructor), which sets its own logger to INFO: no table-creation chatter
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return callback
