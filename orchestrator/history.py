"""Each run's evaluation history and state, kept in storage by the driver as results arrive.

Tune rewrites a trial's own result log when a relaunched sweep restarts it, so the
sweep keeps its own record per run, beside its checkpoints:

- ``<experiment>/<run>/history.json``: every reported evaluation, rewritten after each
  one (never truncated by a relaunch). A step reported twice (work redone after a
  failure) shows up twice; readers keep the latest.
- ``<experiment>/<run>/state.json``: ``running``, ``finished`` or ``failed`` with the
  error, so ``--status`` and ``--report`` can tell from storage alone, from any machine.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from ray import tune

from contract.spec import StorageSpec
from contract.storage import join, read_json, write_json

FIELDS = ("step", "total_steps", "train_loss", "val_loss", "lr", "grad_norm", "clip_rate", "tokens_per_s", "diverged", "diverged_at",
          "checkpoint_path", "timestamp", "mfu", "time_setup_s", "first_step_at", "reported_at", "time_train_s", "time_eval_s",
          "time_checkpoint_s", "time_report_s", "micro_batch_size", "accumulation_steps", "memory_fallback",
          "data_longer_than_block", "eval_tokens", "doc_nll", "doc_tokens", "grad_norms")


def _uri(storage: StorageSpec, experiment: str, run_dir: str, name: str) -> str:
    return join(storage.path, experiment, run_dir, name)


def read(storage: StorageSpec, experiment: str, run_dir: str) -> list[dict[str, Any]]:
    """The rows saved for one run, oldest first; [] when it never reported."""
    return read_json(_uri(storage, experiment, run_dir, "history.json"), storage) or []


def read_state(storage: StorageSpec, experiment: str, run_dir: str) -> dict[str, Any]:
    """{"state": "running" | "finished" | "failed", "error": ..., "since": ...}, or {} before the run started."""
    return read_json(_uri(storage, experiment, run_dir, "state.json"), storage) or {}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class History(tune.Callback):
    """Appends every reported result of every trial to its run's history.json, and records its state."""

    def __init__(self, storage: StorageSpec, experiment: str, run_dir):
        self.storage, self.experiment, self.run_dir = storage, experiment, run_dir
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def _save(self, trial, name: str, value: Any) -> None:
        try:
            write_json(_uri(self.storage, self.experiment, self.run_dir(trial.config["job"]["run_name"]), name), self.storage, value)
        except OSError as err:  # kept in memory; the next result writes everything again
            print(f"[{trial.config['job']['run_name']}] warning: {name} not saved yet, storage unavailable: {err}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._save(trial, "state.json", {"state": "running", "since": time.time()})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_dir = self.run_dir(trial.config["job"]["run_name"])
        if run_dir not in self.rows:  # first result since this driver started: continue what is saved
            self.rows[run_dir] = read(self.storage, self.experiment, run_dir)
        self.rows[run_dir].append({k: _clean(result[k]) for k in FIELDS if k in result})
        self._save(trial, "history.json", self.rows[run_dir])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._save(trial, "state.json", {"state": "finished", "since": time.time()})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._save(trial, "state.json", {"state": "failed", "error": trial_error(trial), "since": time.time()})


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
