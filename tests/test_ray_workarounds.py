"""Ray workarounds fail loudly when what they rely on moves. (Their effects are tested where they matter:
the secret and the checkpoint upload in test_cluster, cheap reports and the last result in test_sweep,
relative paths under ray job submit in test_cluster.)"""

import re
import time

import pytest

from orchestrator.sweep import ray_workarounds


@pytest.mark.parametrize(
    "module,cls,attribute,says",
    [
        (
            "ray.tune.execution.class_cache",
            None,
            "ENV_VARS_TO_PROPAGATE",
            "keeps AWS secrets out of Ray's runtime-env logs",
        ),
        (
            "ray.train.v2._internal.constants",
            None,
            "HEALTH_CHECK_INTERVAL_S_ENV_VAR",
            "keeps each report() from waiting 2 s",
        ),
        (
            "ray.train.constants",
            None,
            "RAY_CHDIR_TO_TRIAL_DIR",
            "keeps relative data paths working under ray job submit",
        ),
        (
            "ray.train.v2.api.context",
            "DistributedTrainContext",
            "get_storage",
            "uploads each checkpoint from the background thread",
        ),
        (
            "ray.train.v2._internal.constants",
            None,
            "ENABLE_PREEMPTION_WATCHER_ENV_VAR",
            "saves every run the PreemptionWatcher actor it does not use",
        ),
        ("ray._common.constants", None, "HEAD_NODE_RESOURCE_NAME", "keeps trials on the head node"),
        ("ray._private.ray_logging", None, "_color", "keeps colour codes out of a console that is not a terminal"),
        (
            "ray._private.ray_constants",
            None,
            "RAY_DEDUP_LOGS_SKIP_REGEX",
            "keeps the raylet's worker start-up warnings off the console",
        ),
        (
            "ray.train.v2.api.data_parallel_trainer",
            "DataParallelTrainer",
            "_create_default_callbacks",
            "saves every run the DatasetManager actor it does not use",
        ),
        (
            "ray.train.v2._internal.execution.storage",
            "StorageContext",
            "persist_current_checkpoint",
            "uploads each checkpoint from the background thread",
        ),
        (
            "ray.train.v2._internal.execution.controller.controller",
            "TrainController",
            "get_result",
            "runs each Train controller in its trial's process",
        ),
        (
            "ray.train.v2._internal.callbacks.placement_group_callback",
            None,
            "PlacementGroupCleanerCallback",
            "replaces a placement-group cleaner process per run by one per sweep",
        ),
        (
            "ray.train.v2._internal.execution.controller.controller",
            "TrainController",
            "worker_group_cls",
            "saves a run of one worker the synchronization actor it does not need",
        ),
        (
            "ray.train.v2._internal.execution.worker_group.worker_group",
            None,
            "SynchronizationActor",
            "saves a run of one worker the synchronization actor it does not need",
        ),
        (
            "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client",
            None,
            "get_or_create_autoscaling_coordinator",
            "starts the autoscaling coordinator before the first runs wait for it",
        ),
    ],
)
def test_a_moved_ray_internal_fails_the_check_naming_what_it_protected(monkeypatch, module, cls, attribute, says):
    import importlib

    owner = importlib.import_module(module)
    monkeypatch.delattr(getattr(owner, cls) if cls else owner, attribute)
    with pytest.raises(
        ray_workarounds.RayWorkaroundBroken,
        match=f"Ray .*The workaround in orchestrator/sweep/ray_workarounds.py that {re.escape(says)}",
    ):
        ray_workarounds._check()


def test_aws_secrets_are_not_propagated_to_trials(monkeypatch):
    from ray.tune.execution import class_cache

    monkeypatch.setattr(
        class_cache,
        "ENV_VARS_TO_PROPAGATE",
        set(class_cache.ENV_VARS_TO_PROPAGATE) | {"AWS_SECRET_ACCESS_KEY", "AWS_REGION"},
    )
    ray_workarounds.keep_credentials_out_of_ray_logs()
    assert (
        "AWS_SECRET_ACCESS_KEY" not in class_cache.ENV_VARS_TO_PROPAGATE
        and "AWS_REGION" in class_cache.ENV_VARS_TO_PROPAGATE
    )


@pytest.mark.ray
def test_the_janitor_frees_the_cpus_of_a_run_whose_trial_was_killed():
    """What Tune does to a run it stops early: the trial (and the Train controller in it) is killed, and
    the placement group it made keeps its CPU until the job ends. The janitor gives it back."""
    import types

    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with ray_workarounds.placement_group_janitor():

            @ray.remote(num_cpus=0)
            class Trial:
                def reserve(self, trial_id):
                    group = ray.util.placement_group([{"CPU": 1}])
                    ray.get(group.ready())
                    ray.get(ray.get_actor(ray_workarounds.JANITOR).watch.remote(trial_id, group))

            trial = Trial.remote()
            ray.get(trial.reserve.remote("t1"))
            ray.kill(trial)
            time.sleep(2)
            assert ray.available_resources().get("CPU", 0) == 0  # Ray alone keeps the dead trial's CPU

            ray_workarounds.ReleasePlacementGroups().on_trial_complete(0, [], types.SimpleNamespace(trial_id="t1"))
            deadline = time.monotonic() + 30
            while ray.available_resources().get("CPU", 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ray.available_resources().get("CPU", 0) == 1
    finally:
        ray.shutdown()


@pytest.mark.ray
def test_only_a_run_of_several_workers_starts_a_synchronization_actor(monkeypatch, tmp_path):
    """One worker meets every barrier on arrival, so it gets the stand-in and no actor; its broadcast and
    its checkpoint's agreed folder work as before. Two workers keep Train's actor."""
    import ray
    import ray.train

    from orchestrator.sweep import startup

    monkeypatch.setenv(startup.OFF_ENV, "placement_group_janitor")  # no Tune trial here to hand the group to
    for name, value in ray_workarounds.TRAIN_ENV.items():
        monkeypatch.setenv(name, value)

    def loop():
        import ray.train.collective
        from ray.train.v2._internal.execution.context import get_train_context

        rank = ray.train.get_context().get_world_rank()
        got = ray.train.collective.broadcast_from_rank_zero(f"from rank {rank}")
        folder = tmp_path / f"ckpt-{rank}"
        folder.mkdir(exist_ok=True)
        synchronization = type(get_train_context().get_synchronization_actor()).__name__
        ray.train.report({"synchronization": synchronization, "got": got}, checkpoint=ray.train.Checkpoint(folder))

    @ray.remote(num_cpus=0)
    class Trial:  # Train's controller runs in an actor, as in a Tune trial
        def fit(self, workers):
            result = ray_workarounds.TorchTrainer(
                loop,
                scaling_config=ray.train.ScalingConfig(num_workers=workers),
                run_config=ray.train.RunConfig(name=f"w{workers}", storage_path=str(tmp_path / "runs")),
            ).fit()
            return result.metrics, result.checkpoint and result.checkpoint.path

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for workers, synchronization in [(1, "SoloSynchronization"), (2, "ActorHandle")]:
            metrics, checkpoint = ray.get(Trial.remote().fit.remote(workers))
            assert metrics == {"synchronization": synchronization, "got": "from rank 0"}
            assert checkpoint and checkpoint.startswith(str(tmp_path / "runs" / f"w{workers}"))
    finally:
        ray.shutdown()
