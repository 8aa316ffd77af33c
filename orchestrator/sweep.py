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
from orchestrator.history import History
from orchestrator.scheduler import RegressionStopper, load_state
from orchestrator.spec import ExperimentSpec, JobConfig, Run, SpecError
from orchestrator.storage import filesystem, join, read_json, write_json

PLAN_FILE = "plan.json"  # the resolved runs an experiment was started with

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


# Tune copies these from the driver's environment into every trial actor's runtime_env,
# and Ray's runtime-env agent logs runtime_envs in plain text. Trial actors do not need
# the copy: locally they inherit the driver's environment through the raylet, and on a
# cluster each node has its own credential chain (instance role, its own env). So the
# secrets stay out of Ray's logs. (Private Tune module; tests/test_s3.py greps for it.)
_AWS_SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}


def _keep_credentials_out_of_ray_logs() -> None:
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - _AWS_SECRETS


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
    _wait_until_tune_has_the_last_result()


def _wait_until_tune_has_the_last_result(timeout_s: float = 60.0) -> None:
    """TuneReportCallback hands each result to Tune through a one-slot queue, and Tune stops
    draining it once this function returns: under load the final result (the last step, its
    checkpoint) was lost and a finished run looked unfinished. Wait until the slot is empty.
    (Ray 2.60; private session attribute.)"""
    from ray.train._internal.session import get_session

    queue = get_session()._inter_actor_queue
    deadline = time.monotonic() + timeout_s
    while queue is not None and not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.05)


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
        try:
            error = trial.get_pickled_error() or trial.get_error()
        except OSError as err:  # the error file lives in storage, which may be what failed
            error = f"(error file unreadable: {err})"
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


def job_configs(experiment: ExperimentSpec, runs: list[Run]) -> list[dict[str, Any]]:
    """What each trial receives: dicts at the Ray boundary, exactly as the user set them."""
    return [
        JobConfig(experiment=experiment.name, run_name=r.name, option=r.option, spec=r.spec, storage=experiment.storage).model_dump(mode="json", exclude_unset=True)
        for r in runs
    ]


def prepare(experiment: ExperimentSpec, runs: list[Run], fresh: bool) -> tuple[ExperimentSpec, bool]:
    """Decide between a new experiment and resuming one; returns (experiment, resuming).

    The same name with the same resolved runs resumes. The same name with other runs is
    refused (two sweeps are never mixed in one folder); ``fresh`` picks an unused name
    ``NAME-2``, ``NAME-3``, ... instead. Records the plan of a new experiment.
    """
    fs, root = filesystem(experiment.storage.path, experiment.storage)
    if fresh:
        base, n = experiment.name, 1
        while fs.get_file_info(f"{root}/{experiment.name}").type.name != "NotFound":
            n += 1
            experiment = experiment.model_copy(update={"name": f"{base}-{n}"})
    plan_uri = join(experiment.storage.path, experiment.name, PLAN_FILE)
    plan = job_configs(experiment, runs)
    stored = read_json(plan_uri, experiment.storage)
    if stored is not None:
        if stored != plan:
            differ = sorted({j["run_name"] for j in stored} ^ {j["run_name"] for j in plan}) or sorted(
                a["run_name"] for a, b in zip(stored, plan) if a != b)
            raise SpecError(
                f"experiment {experiment.name!r} in {experiment.storage.path} was started with different runs "
                f"(differing: {', '.join(differ) or 'order'}); relaunch with the original spec and flags to resume it, "
                "or pass --fresh to start over under a new name"
            )
        return experiment, True
    fs.create_dir(f"{root}/{experiment.name}", recursive=True)
    write_json(plan_uri, experiment.storage, plan, indent=2)
    return experiment, False


def run_sweep(experiment: ExperimentSpec, runs: list[Run], resuming: bool) -> SweepOutcome:
    """Run every run as a Tune trial on the connected Ray cluster and wait for all of them.

    When ``resuming``, the Tune experiment is restored: finished and stopped runs are kept
    as they are, unfinished and failed ones continue from their latest checkpoint.
    """
    _keep_credentials_out_of_ray_logs()
    fs, root = filesystem(experiment.storage.path, experiment.storage)
    trainable = tune.with_resources(trial, {"cpu": TRIAL_DRIVER_CPU})
    param_space = {"job": tune.grid_search(job_configs(experiment, runs))}
    path = f"{root}/{experiment.name}"
    if resuming and tune.Tuner.can_restore(path, storage_filesystem=fs):
        print(f"resuming experiment {experiment.name}: unfinished runs continue from their latest checkpoints", flush=True)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True, param_space=param_space, storage_filesystem=fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                scheduler=RegressionStopper(experiment.early_stopping, experiment.storage, experiment.name),
                max_concurrent_trials=experiment.max_concurrent or max_concurrent(runs, ray.cluster_resources()),
                trial_name_creator=lambda t: dir_name(t.config["job"]["run_name"]),
                trial_dirname_creator=lambda t: dir_name(t.config["job"]["run_name"]),
            ),
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=root,
                storage_filesystem=fs,
                callbacks=[Progress(), History(experiment.storage, experiment.name, dir_name)],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    results = tuner.fit()
    _, reasons = load_state(experiment.storage, experiment.name)
    return SweepOutcome(results=results, stop_reasons=reasons)
