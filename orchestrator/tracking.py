"""Experiment tracking in the tools users already compare curves in: TensorBoard, and MLflow when asked.

TensorBoard: each run's scalars go to an event file in its folder in the experiment's
storage (local or ``s3://``), so ``tensorboard --logdir <storage.path>/<name>`` shows every
run of the sweep side by side. Tune's own TensorBoard logger would also log every list
in a result as a histogram (per-document losses) under ``ray/tune/`` names; this one writes
the curves a person compares, under the names they expect.

MLflow: Ray's ``MLflowLoggerCallback``, when the spec's ``tracking.mlflow_uri`` is set: one
MLflow run per sweep run, its resolved spec as params, the same curves as TensorBoard as metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.logger import LoggerCallback

from orchestrator.records import finite
from orchestrator.spec import TrackingSpec

SCALARS = {
    "loss/val": "val_loss",
    "loss/train": "train_loss",
    "optim/lr": "lr",
    "optim/grad_norm": "grad_norm",
    "optim/clip_rate": "clip_rate",
    "speed/tokens_per_s": "tokens_per_s",
    "speed/mfu": "mfu",
}


def curves(result: dict[str, Any]) -> dict[str, float]:
    """The finite scalars of a result, under their tracking names."""
    out = {tag: finite(result.get(key)) for tag, key in SCALARS.items()}
    return {tag: value for tag, value in out.items() if value is not None}


class TensorBoard(LoggerCallback):
    """Writes each run's curves with tensorboardX into its trial folder, which Tune syncs to storage."""

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
        writer, step = self._writers[trial], int(result["step"])
        for tag, value in curves(result).items():
            writer.add_scalar(tag, value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial, None)
        if writer is not None:
            writer.close()


class TrackingUnavailable(RuntimeError):
    """Tracking was asked for but cannot work here; the message says how to fix it."""


def mlflow_callback(tracking: TrackingSpec, experiment: str):
    """Ray's MLflow logger for ``tracking``, or None when no tracking URI is set. Needs the `tracking` extra."""
    if tracking.mlflow_uri is None:
        return None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its table-creation chatter on the sweep's console
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.result import TRAINING_ITERATION

    class Curves(MLflowLoggerCallback):
        """Logs the curves TensorBoard gets, at the optimizer step, instead of every field of every result
        (Ray's logger would write the flattened config as metrics, one store write each, at every evaluation)."""

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            # Ray's logger takes the step from timesteps_total, else training_iteration: here, the optimizer step
            super().log_trial_result(iteration, trial, {**curves(result), TRAINING_ITERATION: int(result["step"])})

    try:  # mlflow itself is imported in the callback's constructor
        return Curves(tracking_uri=tracking.mlflow_uri, experiment_name=tracking.mlflow_experiment or experiment, tags={"plateau_sweep.experiment": experiment})
    except ImportError as err:
        raise TrackingUnavailable(f"tracking.mlflow_uri is set but MLflow is not installed ({err}); pip install -e '.[tracking]'") from None
