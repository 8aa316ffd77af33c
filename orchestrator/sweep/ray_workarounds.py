"""Every place this project works around Ray's behaviour or reaches into its internals (Ray 2.60).

Each workaround says what it works around and is checked when this module is imported:
if Ray moves or renames what it relies on, the import fails with a message saying which
workaround broke and what it protected, instead of silently losing its effect (AWS
secrets back in Ray's logs, finished runs reported unfinished, reports waiting 2 s each,
relative paths broken under ``ray job submit``, checkpoints not uploaded). Tests check
each effect where it matters, and remove each attribute in turn to see the check fail
(``tests/test_ray_workarounds.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time

import ray
import ray.train
import ray.train.torch
from ray import tune

from orchestrator.sweep import startup

# 1) Set in the process that builds each TorchTrainer (the Tune trial), which Ray Train
#    propagates to its controller and workers (Train V2's ENV_VARS_TO_PROPAGATE):
#    - Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
#      default) and each report() waits for that poll: 0.1 s keeps a report cheap.
#    - Train moves workers into a per-run scratch folder unless RAY_CHDIR_TO_TRIAL_DIR=0;
#      keeping the job's working directory is what lets `data.path: sources/x.md` mean the
#      same thing under `ray job submit --working-dir .` as on a laptop.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}

# 2) Tune copies these from the driver's environment into every trial actor's runtime_env
#    (ray/tune/execution/class_cache.py ENV_VARS_TO_PROPAGATE), and Ray's runtime-env agent
#    logs runtime_envs in plain text. Trial actors do not need the copy: locally they
#    inherit the driver's environment through the raylet, and on a cluster each node has
#    its own credential chain. So the secrets stay out of Ray's logs.
AWS_SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}

# 3) Every Tune trial asks for a sliver of the head node's own resource, so it runs on the head (the
#    driver's node under `ray job submit`, and on KubeRay), and so does its Train controller, which Train
#    places on the trial's node (DataParallelTrainer._initialize_and_run_controller). A worker node lost
#    mid-run then takes only Train workers with it, which Train restarts from the latest checkpoint on
#    another node; a trial or controller on a lost node would end the run (its restart fails on node
#    affinity to a node that is gone). Ray names the head's resource in ray._common.constants.
HEAD_NODE_RESOURCE = "node:__internal_head__"

# 4) What Ray's raylet tells the driver (a lost node, too many workers starting) is printed plain
#    when RAY_COLOR_PREFIX=0 (orchestrator.CONSOLE_ENV), except the "[repeated 3x across cluster]"
#    its log deduplicator appends, which it colours always (ray/_private/ray_logging _color).


# 6) Train starts a SynchronizationActor for every worker group, one more process per run, that only holds
#    the barrier where the workers must agree (report()'s checkpoint folder, ray.train.collective). A group
#    of one worker agrees with itself on arrival, so it gets a stand-in that answers in the caller's own
#    process (SoloSynchronization); a group of several keeps the actor.


class _Answered:
    """One of the synchronization actor's methods, answered where it is called: ``.remote()`` returns a ready ref."""

    def __init__(self, answer):
        self.answer = answer

    def remote(self, *args, **kwargs):
        return ray.put(self.answer(*args, **kwargs))


def _own_data(world_rank: int, world_size: int, data, **_):
    if world_size != 1:  # a group that grew: never answer a barrier of several
        raise RuntimeError(f"SoloSynchronization asked for a barrier of {world_size} workers (ray_workarounds, 6)")
    return data


class SoloSynchronization:
    """Stands in for Train's SynchronizationActor in a worker group of one: each barrier is met on arrival."""

    broadcast_from_rank_zero = _Answered(_own_data)
    set_required_ranks = _Answered(lambda ranks: True)
    reset = _Answered(lambda: None)


class RayWorkaroundBroken(ImportError):
    """What a workaround relies on is gone from this Ray version."""


def _require(condition: bool, what: str, protects: str) -> None:
    if not condition:
        raise RayWorkaroundBroken(
            f"Ray {ray.__version__}: {what}. The workaround in orchestrator/sweep/ray_workarounds.py that {protects} "
            "would silently stop working; install ray==2.60.0 (pyproject.toml) or update the workaround."
        )


def _check() -> None:
    import inspect

    from ray._common import constants as common_constants
    from ray._private import ray_constants, ray_logging
    from ray.train import constants as train_constants
    from ray.train._internal import session
    from ray.train.v2._internal import constants as train_v2
    from ray.train.v2._internal.callbacks import datasets as train_datasets
    from ray.train.v2._internal.callbacks import placement_group_callback as pg_callback
    from ray.train.v2._internal.execution import callback as train_callback
    from ray.train.v2._internal.execution import collective_impl, controller
    from ray.train.v2._internal.execution import context as train_execution_context
    from ray.train.v2._internal.execution import storage as train_storage
    from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client
    from ray.train.v2._internal.execution.worker_group import state as group_state
    from ray.train.v2._internal.execution.worker_group import worker_group
    from ray.train.v2.api import context as train_context
    from ray.train.v2.api import data_parallel_trainer
    from ray.tune.execution import class_cache

    _require(
        isinstance(getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None), set),
        "tune.execution.class_cache.ENV_VARS_TO_PROPAGATE is gone",
        "keeps AWS secrets out of Ray's runtime-env logs",
    )
    propagated = getattr(train_v2, "ENV_VARS_TO_PROPAGATE", set())
    _require(
        getattr(train_v2, "ENABLE_PREEMPTION_WATCHER_ENV_VAR", None) == "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
        and "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" in propagated,
        "Train V2 no longer reads or propagates RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
        "saves every run the PreemptionWatcher actor it does not use",
    )
    _require(
        getattr(train_v2, "HEALTH_CHECK_INTERVAL_S_ENV_VAR", None) == "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
        and "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in propagated,
        "Train V2 no longer reads or propagates RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
        "keeps each report() from waiting 2 s",
    )
    _require(
        getattr(train_constants, "RAY_CHDIR_TO_TRIAL_DIR", None) == "RAY_CHDIR_TO_TRIAL_DIR",
        "ray.train.constants.RAY_CHDIR_TO_TRIAL_DIR is gone",
        "keeps relative data paths working under ray job submit",
    )
    reset = getattr(getattr(session, "_TrainSession", None), "reset", None)
    _require(
        callable(getattr(session, "get_session", None))
        and reset is not None
        and "_inter_actor_queue" in reset.__code__.co_names,
        "the Train session's _inter_actor_queue is gone",
        "keeps a finished run's last result from being lost",
    )
    get_storage = vars(getattr(train_context, "DistributedTrainContext", object)).get("get_storage")
    persist = getattr(getattr(train_storage, "StorageContext", None), "persist_current_checkpoint", None)
    _require(
        callable(get_storage)
        and callable(persist)
        and list(inspect.signature(persist).parameters)[1:] == ["checkpoint", "checkpoint_dir_name"],
        "TrainContext.get_storage().persist_current_checkpoint(checkpoint, checkpoint_dir_name) is gone",
        "uploads each checkpoint from the background thread",
    )
    formatted = getattr(getattr(ray_logging, "DedupState", None), "formatted", None)
    _require(
        callable(getattr(ray_logging, "_color", None))
        and formatted is not None
        and "_color" in formatted.__code__.co_names,
        "ray_logging's DedupState.formatted no longer colours through _color",
        "keeps colour codes out of a console that is not a terminal",
    )
    # (read when Ray is imported: a notebook that imported Ray first keeps the warnings, which is all it costs)
    _require(
        hasattr(ray_constants, "RAY_DEDUP_LOGS_SKIP_REGEX"),
        "ray_constants.RAY_DEDUP_LOGS_SKIP_REGEX is gone",
        "keeps the raylet's worker start-up warnings off the console",
    )
    _require(
        getattr(common_constants, "HEAD_NODE_RESOURCE_NAME", None) == HEAD_NODE_RESOURCE,
        f"the head node's resource is no longer called {HEAD_NODE_RESOURCE}",
        "keeps trials on the head node",
    )
    start_controller = vars(data_parallel_trainer.DataParallelTrainer).get("_initialize_and_run_controller")
    _require(
        start_controller is not None and "get_node_id" in inspect.getsource(start_controller),
        "Train no longer places its controller on the calling node",
        "keeps trials on the head node",
    )
    _require(
        "_create_default_callbacks" in vars(data_parallel_trainer.DataParallelTrainer)
        and isinstance(getattr(train_datasets, "DatasetsCallback", None), type),
        "DataParallelTrainer._create_default_callbacks or DatasetsCallback is gone",
        "saves every run the DatasetManager actor it does not use",
    )
    run_controller = inspect.signature(getattr(controller.TrainController, "__init__", lambda: None)).parameters
    _require(
        start_controller is not None
        and "TrainController" in inspect.getsource(start_controller)
        and {"train_fn_ref", "train_run_context", "scaling_policy", "failure_policy", "callbacks"}
        <= set(run_controller)
        and inspect.iscoroutinefunction(getattr(controller.TrainController, "run", None))
        and callable(getattr(controller.TrainController, "get_result", None)),
        "DataParallelTrainer._initialize_and_run_controller no longer starts TrainController(**kwargs), "
        "or its run() is no longer a coroutine",
        "runs each Train controller in its trial's process",
    )
    calls = {
        method
        for module in (collective_impl, train_execution_context, worker_group)
        for method in re.findall(r"sync_actor\.(\w+)\.remote", inspect.getsource(module))
    }
    start_group = getattr(getattr(worker_group, "WorkerGroup", None), "_start_impl", None)
    _require(
        getattr(controller.TrainController, "worker_group_cls", None) is getattr(worker_group, "WorkerGroup", object)
        and start_group is not None
        and "SynchronizationActor.options" in inspect.getsource(start_group)
        and hasattr(worker_group, "SynchronizationActor")
        and list(inspect.signature(start_group).parameters) == ["self", "worker_group_state_builder"]
        and "self._worker_group_context" in inspect.getsource(worker_group.WorkerGroup.__init__)
        and calls == {name for name in vars(SoloSynchronization) if not name.startswith("_")}
        and all(
            "_shutdown_sync_actor" in shutdown.__code__.co_names
            for shutdown in (group_state.WorkerGroupState.shutdown, group_state.WorkerGroupStateBuilder.shutdown)
        ),
        "Train's worker group no longer starts its SynchronizationActor in TrainController.worker_group_cls's "
        "_start_impl, or calls methods of it that the stand-in does not answer",
        "saves a run of one worker the synchronization actor it does not need",
    )
    coordinator_client = getattr(autoscaling_coordinator_client, "TrainAutoscalingCoordinatorClient", None)
    _require(
        coordinator_client is not None
        and "get_or_create_autoscaling_coordinator()" in inspect.getsource(coordinator_client)
        and callable(getattr(autoscaling_coordinator_client, "get_or_create_autoscaling_coordinator", None)),
        "Train no longer asks for resources through get_or_create_autoscaling_coordinator()",
        "starts the autoscaling coordinator before the first runs wait for it",
    )
    _require(
        isinstance(getattr(pg_callback, "PlacementGroupCleanerCallback", None), type)
        and "PlacementGroupCleanerCallback" in inspect.getsource(data_parallel_trainer.DataParallelTrainer)
        and callable(getattr(train_callback.WorkerGroupCallback, "after_worker_group_start", None))
        and "placement_group_handle" in inspect.getsource(pg_callback.PlacementGroupCleanerCallback),
        "Train's PlacementGroupCleanerCallback, or the worker group's placement_group_handle, is gone",
        "replaces a placement-group cleaner process per run by one per sweep",
    )


_check()


class TorchTrainer(ray.train.torch.TorchTrainer):
    """Ray Train's TorchTrainer, with up to five processes fewer per run (docs/BENCHMARKS.md, section 2).

    - Without the DatasetsCallback when the run has no Ray Datasets: it starts a DatasetManager
      actor for every run, one more process that imports Ray Data, for nothing (this project's
      worker reads its data itself).
    - Its Train controller runs in the calling process (the Tune trial) instead of an actor of
      its own, and so needs no queue actor to hand results back (:func:`tune_report_callback`):
      Train starts it on the trial's node with no resources and fate-shared with the trial
      anyway, and a process of its own only imports Ray Train and torch again.
    - Its placement groups go to the sweep's janitor (5, below) instead of a
      PlacementGroupCleaner actor of its own.
    - A run of one worker synchronizes with a stand-in instead of a SynchronizationActor (6, above).
    """

    def _create_default_callbacks(self):
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        callbacks = super()._create_default_callbacks()
        if not self.datasets and startup.on("dataset_manager"):
            callbacks = [c for c in callbacks if not isinstance(c, DatasetsCallback)]
        if startup.on("placement_group_janitor"):
            callbacks = [c for c in callbacks if not isinstance(c, PlacementGroupCleanerCallback)]
            callbacks.append(_watched_by_janitor())
        return callbacks

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        if not startup.on("controller_in_trial"):
            return super()._initialize_and_run_controller(**controller_init_kwargs)
        from ray.train.v2._internal.execution.controller import TrainController

        controller = TrainController(**controller_init_kwargs)
        if startup.on("sync_actor"):
            controller.worker_group_cls = _solo_worker_group()
        asyncio.run(controller.run())  # the loop Train's actor would have run it in, in this thread
        return controller.get_result()


def _solo_worker_group():
    """Train's WorkerGroup, which starts a group of one worker with a SoloSynchronization (6, above)."""
    from ray.train.v2._internal.execution.worker_group import state, worker_group

    shutdown = state._shutdown_sync_actor
    if not getattr(shutdown, "passes_solo", False):

        def shutdown_sync_actor(actor):
            if not isinstance(actor, SoloSynchronization):  # ray.kill() takes actors only
                shutdown(actor)

        shutdown_sync_actor.passes_solo = True
        state._shutdown_sync_actor = shutdown_sync_actor

    class SoloActor:  # what _start_impl calls as SynchronizationActor.options(...).remote(...)
        @staticmethod
        def options(**_):
            return SoloActor

        @staticmethod
        def remote(**_):
            return SoloSynchronization()

    class WorkerGroup(worker_group.WorkerGroup):
        def _start_impl(self, worker_group_state_builder):
            if self._worker_group_context.num_workers != 1:
                return super()._start_impl(worker_group_state_builder)
            # for this call only (the trial runs no other worker group)
            actor, worker_group.SynchronizationActor = worker_group.SynchronizationActor, SoloActor
            try:
                return super()._start_impl(worker_group_state_builder)
            finally:
                worker_group.SynchronizationActor = actor

    return WorkerGroup


# 5) A Train run's placement group outlives its controller when the controller dies without shutting its
#    workers down (Tune stopping a run early kills the trial, and the controller with it): Ray removes a
#    placement group only when both the actor and the job that created it are gone. Train's answer, a
#    PlacementGroupCleaner actor per run, is one more process per run, and it polls the controller through
#    the State API, which needs Ray's dashboard: in a local instance started without one it never sees the
#    controller die, and the stopped run's CPUs stay reserved for the rest of the sweep. Instead, one
#    janitor per sweep holds every run's placement group, and the driver has it released when Tune ends
#    the run: no dashboard, and one process in all.
JANITOR = "plateau-placement-group-janitor"


class PlacementGroupJanitor:
    """Holds each trial's placement groups; releases them when the driver says the trial has ended."""

    def __init__(self):
        self.groups: dict[str, list] = {}

    def watch(self, trial_id: str, group) -> None:
        self.groups.setdefault(trial_id, []).append(group)

    def release(self, trial_id: str) -> None:
        """Remove what is left of the trial's placement groups (a run that ended cleanly removed its own)."""
        from ray.util.placement_group import placement_group_table, remove_placement_group

        for group in self.groups.pop(trial_id, []):
            if placement_group_table(group).get("state") != "REMOVED":
                remove_placement_group(group)


# 7) Train V2 asks for each run's resources through Ray Data's AutoscalingCoordinator, one detached actor per
#    cluster that the first run to need it starts on its own node (the head, 3) and waits for: 1.3 s of
#    each first run's start-up on 2 cores. The driver starts it instead, on the same node, while Tune sets up.


def start_autoscaling_coordinator() -> None:
    """In the driver, once connected: start the actor Train's runs ask for resources through (7)."""
    from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client

    if not startup.on("autoscaling_coordinator"):
        return
    here = ray.get_runtime_context().get_node_id()
    # only where Train would start it: it is pinned to its creator's node, and trials run on the head
    if any(n["NodeID"] == here and HEAD_NODE_RESOURCE in n["Resources"] for n in ray.nodes() if n["Alive"]):
        autoscaling_coordinator_client.get_or_create_autoscaling_coordinator()  # not waited for


@contextlib.contextmanager
def placement_group_janitor():
    """In the driver, around the sweep: the janitor the trials hand their placement groups to."""
    janitor = None
    if startup.on("placement_group_janitor"):
        options = {"name": JANITOR, "get_if_exists": True, "num_cpus": 0, "resources": {HEAD_NODE_RESOURCE: 0.001}}
        janitor = ray.remote(PlacementGroupJanitor).options(**options).remote()
    try:
        yield
    finally:
        if janitor is not None:
            ray.kill(janitor)


class ReleasePlacementGroups(tune.Callback):
    """In the driver: when Tune ends a trial, however it ends, the janitor releases its placement groups."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        if startup.on("placement_group_janitor"):
            ray.get_actor(JANITOR).release.remote(trial.trial_id)

    on_trial_error = on_trial_complete


def _watched_by_janitor():
    """The Train callback, in a trial, that hands each of its worker groups' placement groups to the janitor."""
    from ray.train.v2._internal.execution.callback import WorkerGroupCallback

    janitor, trial_id = ray.get_actor(JANITOR), tune.get_context().get_trial_id()

    class WatchedByJanitor(WorkerGroupCallback):
        def after_worker_group_start(self, worker_group):
            group = worker_group.get_worker_group_state().placement_group_handle.placement_group
            ray.get(janitor.watch.remote(trial_id, group))

    return WatchedByJanitor()


def tune_report_callback():
    """The Train callback that hands each result to the Tune trial that runs the TorchTrainer.

    With the controller in the trial's own process (:class:`TorchTrainer`), it reports to
    Tune directly, as any function trainable does; otherwise it is Tune's TuneReportCallback,
    which needs a queue actor between the controller's process and the trial's.
    """
    from ray.train.v2.api.callback import UserCallback
    from ray.tune.integration.ray_train import TuneReportCallback

    if not startup.on("controller_in_trial"):
        return TuneReportCallback()

    class TuneReport(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            # the first worker's report (contract.report.Report), which says where its checkpoint went itself
            ray.tune.report(metrics[0])  # in the trial's training thread, where the controller runs

    return TuneReport()


def plain_dedup_suffix() -> None:
    """Call in the driver when its output is not a terminal: Ray's dedup suffix without colour codes."""
    from ray._private import ray_logging

    ray_logging._color = lambda message: message


def set_train_env() -> None:
    """Call in the process that builds a TorchTrainer, before building it (values already set win)."""
    os.environ.update({k: v for k, v in {**TRAIN_ENV, **startup.train_env()}.items() if k not in os.environ})


def keep_credentials_out_of_ray_logs() -> None:
    """Stop Tune from copying AWS secrets into trial runtime_envs, which Ray logs."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - AWS_SECRETS


def wait_until_tune_has_the_last_result(timeout_s: float = 60.0) -> None:
    """Call at the end of a Tune function trainable that ran a TorchTrainer with :func:`tune_report_callback`.

    TuneReportCallback hands each result to Tune through a one-slot queue, and Tune stops
    draining it once the trainable returns: under load the final result (the last step, its
    checkpoint) was lost and a finished run looked unfinished. Wait until the slot is empty
    (there is no queue when the controller reports from the trial's own process).
    """
    from ray.train._internal.session import get_session

    queue = get_session()._inter_actor_queue
    deadline = time.monotonic() + timeout_s
    while queue is not None and not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.05)


def persist_checkpoint(checkpoint: ray.train.Checkpoint, dir_name: str) -> ray.train.Checkpoint:
    """Ray Train's own upload of a checkpoint folder into the run's storage, as ``dir_name``.

    For ``report(checkpoint_upload_fn=...)``: the worker writes the checkpoint in Ray's
    background upload thread (so training does not wait for the disk) and then needs Ray's
    upload, which is public only as the default of that argument. ``get_storage()`` is
    documented as subject to change between minor versions, hence the check above.
    """
    return ray.train.get_context().get_storage().persist_current_checkpoint(checkpoint, dir_name)
