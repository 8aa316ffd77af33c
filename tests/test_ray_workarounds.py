"""Ray workarounds fail loudly when what they rely on moves. (Their effects are tested where they matter:
the secret in test_s3, cheap reports in test_train, relative paths in test_cluster, the console and the
last result in test_sweep.)"""

import re

import pytest

from orchestrator import ray_workarounds


@pytest.mark.parametrize("module,attribute,says", [
    ("ray.tune.execution.class_cache", "ENV_VARS_TO_PROPAGATE", "keeps AWS secrets out of Ray's runtime-env logs"),
    ("ray.train.v2._internal.constants", "HEALTH_CHECK_INTERVAL_S_ENV_VAR", "keeps each report() from waiting 2 s"),
    ("ray.train.v2._internal.constants", "ENABLE_PRINT_PATCH_ENV_VAR", "keeps worker lines from printing twice"),
    ("ray.train.constants", "RAY_CHDIR_TO_TRIAL_DIR", "keeps relative data paths working under ray job submit"),
    ("ray._private.ray_constants", "RAY_DEDUP_LOGS_SKIP_REGEX", "keeps Ray's per-report and cleaner lines off the console"),
    ("ray._private.ray_constants", "RAY_DEDUP_LOGS_ALLOW_REGEX", "keeps every run's own lines from being merged into one"),
])
def test_a_moved_ray_internal_fails_the_check_naming_what_it_protected(monkeypatch, module, attribute, says):
    import importlib

    monkeypatch.delattr(importlib.import_module(module), attribute)
    with pytest.raises(ray_workarounds.RayWorkaroundBroken, match=f"Ray .*The workaround in orchestrator/ray_workarounds.py that {re.escape(says)}"):
        ray_workarounds._check()


def test_the_installed_ray_passes_the_check():
    ray_workarounds._check()


def test_aws_secrets_are_not_propagated_to_trials(monkeypatch):
    from ray.tune.execution import class_cache

    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE) | {"AWS_SECRET_ACCESS_KEY", "AWS_REGION"})
    ray_workarounds.keep_credentials_out_of_ray_logs()
    assert "AWS_SECRET_ACCESS_KEY" not in class_cache.ENV_VARS_TO_PROPAGATE and "AWS_REGION" in class_cache.ENV_VARS_TO_PROPAGATE
