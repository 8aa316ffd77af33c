"""The sweep: every run is a Ray Tune trial that drives its own Ray Train ``TorchTrainer``.

This is the Train V2 + Tune pattern: a Tune function trainable builds the
``TorchTrainer`` with ``TuneReportCallback``, and the Train run is named after the
trial id (no timestamps), so a restored Tune experiment finds each run's
checkpoints again. Tune and Train share one storage filesystem.
"""

from __future__ import annotations

from typing import Any

from orchestrator import ray_workarounds  # first: it sets Ray's console variables before ray is imported

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402
from ray.tune.integration.ray_train import TuneReportCallback  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from contract.spec import JobConfig  # noqa: E402
from contract.storage import filesystem  # noqa: E402
from jobs.train import train_loop  # noqa: E402
from orchestrator.console import Console  # noqa: E402
from orchestrator.history import History  # noqa: E402
from orchestrator.scheduler import RegressionStopper  # noqa: E402
from orchestrator.spec import ExperimentSpec, Plan, Run, dir_name  # noqa: E402
from orchestrator.tracking import TensorBoard, mlflow_callback  # noqa: E402

# Each trial's own actor only coordinates its TorchTrainer; the Train workers
# request the real CPUs and GPUs. Tune rejects a zero request, hence a sliver.
TRIAL_DRIVER_CPU = 0.01


def trial(config: dict[str, Any]) -> None:
    """Tune function trainable: run one option as a TorchTrainer and wait for it."""
    ray_workarounds.set_train_env()
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
            # Train's own INFO lines (resources requested, worker group started, checkpoint
            # created) stay in Ray's log files; the console shows the project's lines.
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
        JobConfig(experiment=experiment.name, run_name=r.name, option=r.option, spec=r.spec, storage=experiment.storage, evaluation=plan.evaluation).model_dump(mode="json")
        for r in plan.runs
    ]


def run_sweep(experiment: ExperimentSpec, plan: Plan, resuming: bool) -> None:
    """Run every run as a Tune trial on the connected Ray cluster and wait for all of them.

    When ``resuming``, the Tune experiment is restored: finished and stopped runs are kept
    as they are, unfinished and failed ones continue from their latest checkpoint.
    """
    ray_workarounds.keep_credentials_out_of_ray_logs()
    runs = plan.runs
    fs, root = filesystem(experiment.storage.path, experiment.storage)
    trainable = tune.with_resources(trial, {"cpu": TRIAL_DRIVER_CPU})
    param_space = {"job": tune.grid_search(job_configs(experiment, plan))}
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
                callbacks=[
                    Console([r.name for r in runs]),
                    History(experiment.storage, experiment.name, dir_name),
                    JsonLoggerCallback(),  # each trial's result.json, as Tune writes it by default
                    TensorBoard(),
                    *filter(None, [mlflow_callback(experiment.tracking, experiment.name)]),
                ],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    tuner.fit()  # every result, state and stop reason is in storage (orchestrator.history, scheduler)
