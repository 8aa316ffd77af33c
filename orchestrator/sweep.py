"""The sweep: every run is a Ray Tune trial that drives its own Ray Train ``TorchTrainer``.

This is the Train V2 + Tune pattern: a Tune function trainable builds the
``TorchTrainer`` with ``TuneReportCallback``, and the Train run is named after the
trial id (no timestamps), so a restored Tune experiment finds each run's
checkpoints again. Tune and Train share one storage filesystem.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from jobs.train import train_loop
from orchestrator.scheduler import RegressionStopper
from orchestrator.spec import ExperimentSpec, JobConfig, Run
from orchestrator.storage import filesystem, join

# Each trial's own actor only coordinates its TorchTrainer; the Train workers
# request the real CPUs and GPUs. Tune rejects a zero request, hence a sliver.
TRIAL_DRIVER_CPU = 0.01

# Set in the process that builds each TorchTrainer, which Ray propagates to its
# controller and workers:
# - Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S
#   (2 s by default) and each report() waits for that poll.
# - Train moves workers into a per-run scratch folder unless RAY_CHDIR_TO_TRIAL_DIR=0;
#   keeping the job's working directory is what lets `data.path: sources/x.md`
#   mean the same thing under `ray job submit --working-dir .` as on a laptop.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}


def dir_name(run_name: str) -> str:
    """A storage-safe folder name for a run: ``loose_clipping[grad_clip=2.0]`` -> ``loose_clipping-grad_clip_2.0``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name.replace("[", "-")).strip("_")


def trial(config: dict[str, Any]) -> None:
    """Tune function trainable: run one option as a TorchTrainer and wait for it."""
    os.environ.update({k: v for k, v in TRAIN_ENV.items() if k not in os.environ})
    job = JobConfig.model_validate(config["job"])
    resources = job.spec.resources
    fs, root = filesystem(job.storage.path, job.storage)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config["job"],
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker={"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker},
        ),
        run_config=RunConfig(
            name=f"train-{tune.get_context().get_trial_id()}",
            storage_path=f"{root}/{job.experiment}/{dir_name(job.run_name)}",
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(
                num_to_keep=job.spec.run.keep_checkpoints,
                checkpoint_score_attribute="val_loss",
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=job.spec.run.max_failures),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


class Progress(tune.Callback):
    """One plain line per evaluation and per finished run: readable in a ``ray job logs`` stream."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[float, int]] = {}  # trial_id -> (time, step) of its first report here
        self.best: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name, step, total = trial.config["job"]["run_name"], int(result["step"]), int(result["total_steps"])
        t0, s0 = self.started.setdefault(trial.trial_id, (time.monotonic() - result.get("time_train_s", 0.0), 0))
        rate = (step - s0) / max(time.monotonic() - t0, 1e-9)
        eta = _duration((total - step) / rate) if rate > 0 else "?"
        val = result.get("val_loss", math.nan)
        if val == val:
            self.best[trial.trial_id] = min(val, self.best.get(trial.trial_id, math.inf))
        print(
            f"[{name}] step {step}/{total}  val {val:.4f} (best {self.best.get(trial.trial_id, math.nan):.4f})  "
            f"train {result['train_loss']:.4f}  lr {result['lr']:.2e}  {result['tokens_per_s']:,.0f} tok/s  ETA {eta}",
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        print(f"[{trial.config['job']['run_name']}] finished", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_pickled_error() or trial.get_error()
        print(f"[{trial.config['job']['run_name']}] FAILED: {str(error).strip().splitlines()[-1] if error else 'unknown error'}", flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def max_concurrent(runs: list[Run], cluster: dict[str, float]) -> int:
    """How many of these runs the cluster's resources hold at once (at least 1)."""
    fit, used_cpu, used_gpu = 0, 0.0, 0.0
    for run in runs:
        r = run.spec.resources
        cpu = r.num_workers * r.cpus_per_worker + TRIAL_DRIVER_CPU
        gpu = r.num_workers * r.gpus_per_worker
        if used_cpu + cpu > cluster.get("CPU", 0) + 1e-9 or used_gpu + gpu > cluster.get("GPU", 0) + 1e-9:
            break
        used_cpu, used_gpu, fit = used_cpu + cpu, used_gpu + gpu, fit + 1
    return max(1, fit)


@dataclass
class SweepOutcome:
    results: Any  # ray.tune.ResultGrid
    stop_reasons: dict[str, str]  # run name -> why early stopping stopped it
    experiment_uri: str


def run_sweep(experiment: ExperimentSpec, runs: list[Run]) -> SweepOutcome:
    """Run every run as a Tune trial on the connected Ray cluster and wait for all of them."""
    fs, root = filesystem(experiment.storage.path, experiment.storage)
    jobs = [JobConfig(experiment=experiment.name, run_name=r.name, option=r.option, spec=r.spec, storage=experiment.storage).model_dump(mode="json", exclude_unset=True) for r in runs]
    scheduler = RegressionStopper(experiment.early_stopping)
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": TRIAL_DRIVER_CPU}),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            max_concurrent_trials=experiment.max_concurrent or max_concurrent(runs, ray.cluster_resources()),
            trial_name_creator=lambda t: dir_name(t.config["job"]["run_name"]),
            trial_dirname_creator=lambda t: dir_name(t.config["job"]["run_name"]),
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=root,
            storage_filesystem=fs,
            callbacks=[Progress()],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    results = tuner.fit()
    names = {r.config["job"]["run_name"]: r for r in results}
    by_trial = {res.metrics.get("trial_id"): name for name, res in names.items()}
    reasons = {by_trial.get(tid, tid): why for tid, why in scheduler.reasons.items()}
    return SweepOutcome(results=results, stop_reasons=reasons, experiment_uri=join(experiment.storage.path, experiment.name))
