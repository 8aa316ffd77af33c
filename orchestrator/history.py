"""Each run's evaluation history, kept in storage by the driver as results arrive.

Tune rewrites a trial's own result log when a relaunched sweep restarts it, so the
sweep keeps its own record: ``<experiment>/<run>/history.json``, rewritten after
every evaluation (a few KB), and never truncated by a relaunch. Rows are kept as
reported; a step reported twice (work redone after a failure) shows up twice.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from orchestrator.spec import StorageSpec
from orchestrator.storage import join, read_json, write_json

FIELDS = ("step", "train_loss", "val_loss", "lr", "grad_norm", "clip_rate", "tokens_per_s", "diverged", "diverged_at", "checkpoint_path", "timestamp",
          "mfu", "time_setup_s", "first_step_at", "reported_at", "time_train_s", "time_eval_s", "time_checkpoint_s", "time_report_s")


def _uri(storage: StorageSpec, experiment: str, run_dir: str) -> str:
    return join(storage.path, experiment, run_dir, "history.json")


def read(storage: StorageSpec, experiment: str, run_dir: str) -> list[dict[str, Any]]:
    """The rows saved for one run, oldest first; [] when it never reported."""
    return read_json(_uri(storage, experiment, run_dir), storage) or []


class History(tune.Callback):
    """Appends every reported result of every trial to its run's history.json."""

    def __init__(self, storage: StorageSpec, experiment: str, run_dir):
        self.storage, self.experiment, self.run_dir = storage, experiment, run_dir
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_dir = self.run_dir(trial.config["job"]["run_name"])
        if run_dir not in self.rows:  # first result since this driver started: continue what is saved
            self.rows[run_dir] = read(self.storage, self.experiment, run_dir)
        row = {k: result[k] for k in FIELDS if k in result}
        self.rows[run_dir].append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
        try:
            write_json(_uri(self.storage, self.experiment, run_dir), self.storage, self.rows[run_dir])
        except OSError as err:  # kept in memory; the next result writes everything again
            print(f"[{trial.config['job']['run_name']}] warning: history.json not saved yet, storage unavailable: {err}", flush=True)
