"""The sweep: every run is a Ray Tune trial that drives its own Ray Train ``TorchTrainer``.

This is the Train V2 + Tune pattern: a Tune function trainable builds the
``TorchTrainer`` with ``TuneReportCallback``, and the Train run is named after the
trial id (no timestamps), so a restored Tune experiment finds each run's checkpoints
again. Tune and Train share one storage filesystem, and every path comes from the
experiment's folder (:class:`~orchestrator.folder.ExperimentFolder`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from typing import Any

import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.logger import JsonLoggerCallback

from contract.spec import JobConfig
from contract.storage import filesystem
from jobs.train import train_loop
from orchestrator.folder import ExperimentFolder
from orchestrator.spec import ExperimentSpec, Plan, Run, SpecError, dir_name
from orchestrator.sweep import ray_workarounds
from orchestrator.sweep.callbacks import Console, History, TensorBoard, mlflow_callback
from orchestrator.sweep.scheduler import SweepScheduler

# Ray's console settings, all in one place. Ray and Tune read them when they are used, not
# when Ray is imported, so connect() sets them just before Ray starts (values already set win):
# - RAY_AIR_NEW_OUTPUT=0 drops Tune's banner table and its TensorBoard hint, which points
#   into a temporary session folder that is gone after the run;
# - TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: Tune's default CSV logger fixes its columns at the
#   first result (the step-0 evaluation, which has no train loss) and silently drops the
#   rest, and its TensorBoard logger writes every list as a histogram; the sweep adds Tune's
#   JSON logger and its own TensorBoard writer (.callbacks) instead;
# - TUNE_WARN_THRESHOLD_S=5: Tune warns (4 lines each time) when a callback takes over 0.5 s;
#   ours write each run's history to storage, S3 included, after every evaluation;
# - RAY_COLOR_PREFIX=0 when the output is not a terminal: what Ray's raylet has to tell the
#   driver (an out-of-memory kill, too many workers starting) is printed without colour codes.
# Workers' own output never reaches the console at all (connect(): log_to_driver=False).
CONSOLE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_WARN_THRESHOLD_S": "5",
    **({} if sys.stdout.isatty() else {"RAY_COLOR_PREFIX": "0"}),
}

# Each trial's own actor only coordinates its TorchTrainer; the Train workers
# request the real CPUs and GPUs. Tune rejects a zero request, hence a sliver.
TRIAL_DRIVER_CPU = 0.01


def trial(config: dict[str, Any]) -> None:
    """Tune function trainable: run one option as a TorchTrainer and wait for it."""
    ray_workarounds.set_train_env()
    job = JobConfig.model_validate(config["job"])
    resources = job.spec.resources
    fs, path = filesystem(ExperimentFolder(job.storage, job.experiment).run_uri(job.run_name), job.storage)
    trainer = TorchTrainer(
        functools.partial(train_loop, persist=ray_workarounds.persist_checkpoint),
        train_loop_config=config["job"],
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker={"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker},
        ),
        run_config=RunConfig(
            name=f"train-{tune.get_context().get_trial_id()}",
            storage_path=path,
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(
                num_to_keep=job.spec.run.keep_checkpoints,
                checkpoint_score_attribute="val_loss",
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=job.spec.run.max_failures),
            callbacks=[TuneReportCallback()],
            # Train's own INFO lines (resources requested, worker group started, checkpoint
            # created) stay in Ray's log files.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    trainer.fit()
    ray_workarounds.wait_until_tune_has_the_last_result()


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


def job_configs(experiment: ExperimentSpec, plan: Plan) -> list[dict[str, Any]]:
    """What each trial receives: dicts at the Ray boundary (every field, so they load back as they were)."""
    return [
        JobConfig(
            experiment=experiment.name,
            run_name=r.name,
            option=r.option,
            spec=r.spec,
            storage=experiment.storage,
            evaluation=plan.evaluation,
        ).model_dump(mode="json")
        for r in plan.runs
    ]


def connect(local: bool, plan: Plan) -> None:
    """Start a Ray instance on this machine (``local``) or connect to the cluster in RAY_ADDRESS.

    Workers' own output stays in Ray's log files (``log_to_driver=False``): what a worker has
    to say reaches the console through its results (:class:`~orchestrator.sweep.callbacks.Console`),
    so it reads the same in a terminal, a pipe, a file or ``ray job logs``.
    """
    os.environ.update({k: v for k, v in CONSOLE_ENV.items() if k not in os.environ})
    if not local:
        if not os.environ.get("RAY_ADDRESS"):
            raise SpecError(
                "no Ray cluster to connect to: submit with `ray job submit -- python -m orchestrator.launch SPEC`, "
                "set RAY_ADDRESS, or pass --local"
            )
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level=logging.WARNING)
        return
    demand = sum(r.spec.resources.num_workers * r.spec.resources.cpus_per_worker + TRIAL_DRIVER_CPU for r in plan.runs)
    cpus = max(os.cpu_count() or 1, math.ceil(demand))
    print(f"starting a local Ray instance ({cpus} logical CPUs)", flush=True)
    ray.init(
        address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )


def disconnect() -> None:
    """Stop the local Ray instance :func:`connect` started (or leave the cluster)."""
    ray.shutdown()


def run_sweep(experiment: ExperimentSpec, plan: Plan, folder: ExperimentFolder, resuming: bool) -> None:
    """Run every run as a Tune trial on the connected Ray cluster and wait for all of them.

    When ``resuming``, the Tune experiment is restored: finished and stopped runs are kept
    as they are, unfinished and failed ones continue from their latest checkpoint.
    """
    ray_workarounds.keep_credentials_out_of_ray_logs()
    runs = plan.runs
    fs, path = folder.filesystem()
    trainable = tune.with_resources(trial, {"cpu": TRIAL_DRIVER_CPU})
    param_space = {"job": tune.grid_search(job_configs(experiment, plan))}
    if resuming and tune.Tuner.can_restore(path, storage_filesystem=fs):
        print(
            f"resuming experiment {experiment.name}: unfinished runs continue from their latest checkpoints", flush=True
        )
        tuner = tune.Tuner.restore(
            path, trainable, resume_unfinished=True, resume_errored=True, param_space=param_space, storage_filesystem=fs
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                scheduler=SweepScheduler(experiment.early_stopping, plan.searches, folder),
                max_concurrent_trials=experiment.max_concurrent or max_concurrent(runs, ray.cluster_resources()),
                trial_name_creator=lambda t: dir_name(t.config["job"]["run_name"]),
                trial_dirname_creator=lambda t: dir_name(t.config["job"]["run_name"]),
            ),
            run_config=tune.RunConfig(
                name=folder.name,  # Tune's experiment is the folder: its runs' folders are named by dir_name
                storage_path=path.rsplit("/", 1)[0],
                storage_filesystem=fs,
                callbacks=[
                    Console([r.name for r in runs]),
                    History(folder),
                    JsonLoggerCallback(),  # each trial's result.json, as Tune writes it by default
                    TensorBoard(),
                    *filter(None, [mlflow_callback(experiment.tracking, experiment.name)]),
                ],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    tuner.fit()  # every result, state and stop reason is in the experiment folder
