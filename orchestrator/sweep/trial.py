"""The sweep: every run is a Ray Tune trial that drives its own Ray Train ``TorchTrainer``.

This is the Train V2 + Tune pattern: a Tune function trainable builds the
``TorchTrainer`` that reports each result to Tune, and the Train run is named after the
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
from ray.tune.logger import JsonLoggerCallback

from contract.report import RANKED_BY
from contract.spec import JobConfig, ResourcesSpec, StorageSpec
from contract.storage import is_s3
from jobs.train import train_loop
from orchestrator.folder import ExperimentFolder
from orchestrator.spec import ExperimentSpec, Plan, Run, SpecError
from orchestrator.sweep import ray_workarounds
from orchestrator.sweep.callbacks import Console, History, TensorBoard, mlflow_callback
from orchestrator.sweep.scheduler import SweepScheduler

# Each trial's own actor only coordinates its TorchTrainer and asks for no CPU (the Train workers
# ask for the real CPUs and GPUs); a sliver of the head node's own resource keeps it, and its Train
# controller, on the head (ray_workarounds.HEAD_NODE_RESOURCE says why).
TRIAL_RESOURCES = {"cpu": 0, ray_workarounds.HEAD_NODE_RESOURCE: 0.001}


def trial(config: dict[str, Any]) -> None:
    """Tune function trainable: run one option as a TorchTrainer and wait for it."""
    ray_workarounds.set_train_env()
    job = JobConfig.model_validate(config["job"])
    resources = job.spec.resources
    folder = ExperimentFolder(job.storage, job.experiment)
    fs, path = folder.train_storage(job.run_name)
    trainer = ray_workarounds.TorchTrainer(
        functools.partial(train_loop, persist=ray_workarounds.persist_checkpoint),
        train_loop_config=config["job"],
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker=worker_resources(job.spec.resources),
        ),
        run_config=RunConfig(
            name=folder.train_run(tune.get_context().get_trial_id()),
            storage_path=path,
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(
                num_to_keep=job.spec.run.keep_checkpoints,
                checkpoint_score_attribute=RANKED_BY,
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=job.spec.run.max_failures),
            callbacks=[ray_workarounds.tune_report_callback()],
            # Train's own INFO lines (resources requested, worker group started, checkpoint
            # created) stay in Ray's log files.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    trainer.fit()
    ray_workarounds.wait_until_tune_has_the_last_result()


def worker_resources(resources: ResourcesSpec) -> dict[str, float]:
    """What each Train worker of a run asks Ray for."""
    return {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker, **resources.custom}


def max_concurrent(runs: list[Run], cluster: dict[str, float]) -> int:
    """How many of these runs, in order, these resources hold at once (at least 1)."""
    used: dict[str, float] = {}
    for fit, run in enumerate(runs):
        r = run.spec.resources
        demand = {k: used.get(k, 0.0) + r.num_workers * v for k, v in worker_resources(r).items()}
        if any(total > cluster.get(k, 0.0) + 1e-9 for k, total in demand.items() if total):
            return max(1, fit)
        used.update(demand)
    return max(1, len(runs))


def trials_at_once(experiment: ExperimentSpec, runs: list[Run], local: bool, concurrency: int | None) -> int | None:
    """Tune's ``max_concurrent_trials``: the spec's ``max_concurrent``, else what local mode chose from the cores,
    else in local mode what this machine's resources hold; on a cluster, None: every run is offered at once.

    On a cluster, what it holds at launch is the wrong cap: on an autoscaling one (`ray up cluster.yaml`,
    ``min_workers: 0``) that is the head alone, so one run at a time, and the autoscaler, which adds nodes only
    for resources asked for, sees one run's demand at a time. Offered every run, Tune starts every trial (on the
    head, with no CPU); each trial's TorchTrainer asks for its workers (a placement group, and a request through
    Train's AutoscalingCoordinator, both demand the autoscaler acts on) and waits for them, retrying its worker
    group every minute (Train's default controller_failure_limit retries without end). So the autoscaler sees the
    whole sweep and adds nodes up to the cluster's max_workers; runs beyond that wait for a node, not for each
    other. Ray 2.60 can also report the most a cluster can grow to
    (``ray._private.state.state.get_max_resources_from_cluster_config()``, which Train reads to refuse a worker
    group too large for the cluster), but only from a cluster config someone reported to the GCS; Ray's own
    autoscaler (`ray up`, the fake provider in tests/test_autoscaling.py) reports none, so it cannot cap this.
    """
    if experiment.max_concurrent:
        return experiment.max_concurrent
    if concurrency:
        return concurrency
    return max_concurrent(runs, ray.cluster_resources()) if local else None


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


def connect(local: bool, plan: Plan, storage: StorageSpec, concurrency: int | None = None) -> None:
    """Start a Ray instance on this machine (``local``) or connect to the cluster in RAY_ADDRESS.

    Workers' own output stays in Ray's log files (``log_to_driver=False``): what a worker has
    to say reaches the console through its results (:class:`~orchestrator.sweep.callbacks.Console`),
    so it reads the same in a terminal, a pipe, a file or ``ray job logs``.

    On a cluster of several nodes, a local ``storage.path`` is refused (:class:`SpecError`)
    unless it is declared ``shared``: each node would write its checkpoints to its own disk,
    and a run restarted on another node could not find them.
    """
    if not sys.stdout.isatty():
        ray_workarounds.plain_dedup_suffix()
    if not local:
        if not os.environ.get("RAY_ADDRESS"):
            raise SpecError(
                "no Ray cluster to connect to: submit with `ray job submit -- python -m orchestrator.launch SPEC`, "
                "set RAY_ADDRESS, or pass --local"
            )
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level=logging.WARNING)
        try:
            check_storage_reaches(len([n for n in ray.nodes() if n["Alive"]]), storage)
        except SpecError:
            ray.shutdown()
            raise
        ray_workarounds.start_autoscaling_coordinator()
        return
    # Logical CPUs for every run that goes at once (``concurrency`` of them, or all), however few cores there are
    demands = sorted((r.spec.resources.num_workers * r.spec.resources.cpus_per_worker for r in plan.runs), reverse=True)
    cpus = max(os.cpu_count() or 1, math.ceil(sum(demands[: concurrency or len(demands)])))
    print(f"starting a local Ray instance ({cpus} logical CPUs)", flush=True)
    ray.init(
        address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    ray_workarounds.start_autoscaling_coordinator()


def check_storage_reaches(nodes: int, storage: StorageSpec) -> None:
    """Refuse a local storage path on a cluster of ``nodes`` > 1 alive nodes, unless it is declared shared.

    Ray Train's own check (a marker file) passes on one host and fails only on a real cluster.
    """
    if nodes > 1 and not is_s3(storage.path) and not storage.shared:
        raise SpecError(
            f"storage.path {storage.path!r} is a local folder, but this Ray cluster has {nodes} nodes: each "
            "would write checkpoints to its own disk and a run moved to another node would lose them. Use "
            "s3://bucket/prefix (with storage.endpoint_url for MinIO and the like), or set storage.shared: true "
            "if every node mounts that path (NFS)"
        )


def disconnect() -> None:
    """Stop the local Ray instance :func:`connect` started (or leave the cluster)."""
    ray.shutdown()


def run_sweep(
    experiment: ExperimentSpec,
    plan: Plan,
    folder: ExperimentFolder,
    resuming: bool,
    local: bool,
    concurrency: int | None = None,
) -> None:
    """Run every run as a Tune trial on the connected Ray cluster and wait for all of them.

    When ``resuming``, the Tune experiment is restored: finished and stopped runs are kept
    as they are, unfinished and failed ones continue from their latest checkpoint. How many
    runs go at once: :func:`trials_at_once` (``local``: a Ray instance on this machine;
    ``concurrency``: what local mode chose from the cores).
    """
    ray_workarounds.keep_credentials_out_of_ray_logs()
    runs = plan.runs
    fs, path = folder.filesystem()
    trainable = tune.with_resources(trial, TRIAL_RESOURCES)
    param_space = {"job": tune.grid_search(job_configs(experiment, plan))}
    if resuming and tune.Tuner.can_restore(path, storage_filesystem=fs):
        print(
            f"resuming experiment {experiment.name}: unfinished runs continue from their latest checkpoints", flush=True
        )
        tuner = tune.Tuner.restore(
            path, trainable, resume_unfinished=True, resume_errored=True, param_space=param_space, storage_filesystem=fs
        )
    else:
        storage_fs, storage_path = folder.tune_storage()
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                scheduler=SweepScheduler(experiment.early_stopping, plan.searches, folder),
                max_concurrent_trials=trials_at_once(experiment, runs, local, concurrency),
                trial_name_creator=lambda t: folder.run_folder(t.config["job"]["run_name"]),
                trial_dirname_creator=lambda t: folder.run_folder(t.config["job"]["run_name"]),
            ),
            run_config=tune.RunConfig(
                name=folder.name,  # in that storage path, Tune's experiment folder is the experiment's folder
                storage_path=storage_path,
                storage_filesystem=storage_fs,
                callbacks=[
                    Console(folder, [r.name for r in runs]),
                    History(folder),
                    JsonLoggerCallback(),  # each trial's result.json, as Tune writes it by default
                    TensorBoard(),
                    *filter(None, [mlflow_callback(experiment.tracking, experiment.name)]),
                    ray_workarounds.ReleasePlacementGroups(),
                ],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    with ray_workarounds.placement_group_janitor():
        tuner.fit()  # every result, state and stop reason is in the experiment folder
