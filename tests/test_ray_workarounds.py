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

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
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
