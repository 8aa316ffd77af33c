"""Every place this project works around Ray's behaviour or reaches into its internals (Ray 2.60).

Each workaround says what it works around and is checked when this module is imported:
if Ray moves or renames what it relies on, the import fails with a message saying which
workaround broke and what it protected, instead of silently losing its effect (AWS
secrets back in Ray's logs, finished runs reported unfinished, reports waiting 2 s each,
relative paths broken under ``ray job submit``). Tests check each effect
(``tests/test_ray_workarounds.py``).

Importing this module sets the console variables first: Ray reads them when it is
imported, so the launcher imports this before anything imports ray.
"""

from __future__ import annotations

import os
import time

# 1) A quiet console. Ray's driver drops forwarded worker lines that match this regex
#    (read once, when `ray` is imported: ray/_private/ray_constants.py). They stay in
#    Ray's log files under the session folder. Matched against the raw line, before the
#    "(RayTrainWorker pid=...)" prefix is added.
#    - Train's worker logs "Reporting training result N: TrainingReport(...)" at INFO for
#      every report (train/v2/_internal/execution/context.py, a logger named by file path).
#    - Train's placement-group cleaner warns every second while the State API is busy.
#    - The raylet warns whenever more Python workers start than it has CPUs.
#    - The TrainController's C++ core worker complains about its constructor arguments.
#    RAY_AIR_NEW_OUTPUT=0 drops Tune's banner table and its TensorBoard hint, which points
#    into a temporary session folder that is gone after the run.
CONSOLE_SKIP = "|".join([
    "Reporting training result",
    "State API may be temporarily unavailable",
    "worker processes have been started",
    "PreemptionWatcher",
])
#    The worker's own lines ("[current[seed=1]] data: ...") must never be merged: Ray's dedup
#    drops every word containing a digit before comparing lines from different workers
#    (ray/_private/ray_logging/__init__.py _canonicalise_log_line), so the data lines of
#    current[seed=0] and current[seed=1] look alike to it and only one of them was printed,
#    with "[repeated 2x across cluster]". Lines matching RAY_DEDUP_LOGS_ALLOW_REGEX are
#    printed as they are; every line the worker prints starts with its run's name in brackets.
PROJECT_LINE = r"^\[\S+\] "
#    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: Tune's default CSV logger fixes its columns at the
#    first result (the step-0 evaluation, which has no train loss) and silently drops the
#    rest, and its TensorBoard logger writes every list as a histogram. The sweep adds
#    Tune's JSON logger and its own TensorBoard writer (orchestrator.tracking) instead.
#    TUNE_WARN_THRESHOLD_S=5: Tune warns (4 lines each time) when a callback takes over 0.5 s;
#    ours write each run's history to storage, S3 included, after every evaluation.
DRIVER_ENV = {"RAY_DEDUP_LOGS_SKIP_REGEX": CONSOLE_SKIP, "RAY_DEDUP_LOGS_ALLOW_REGEX": PROJECT_LINE, "RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_WARN_THRESHOLD_S": "5"}
for _name, _value in DRIVER_ENV.items():
    os.environ.setdefault(_name, _value)

import ray  # noqa: E402  (after the console variables, on purpose)
import ray.train  # noqa: E402

# 2) Set in the process that builds each TorchTrainer (the Tune trial), which Ray
#    propagates to its controller and workers:
#    - Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
#      default) and each report() waits for that poll: 0.1 s keeps a report cheap.
#    - Train moves workers into a per-run scratch folder unless RAY_CHDIR_TO_TRIAL_DIR=0;
#      keeping the job's working directory is what lets `data.path: sources/x.md` mean the
#      same thing under `ray job submit --working-dir .` as on a laptop.
#    - Train patches print() in workers into its logger, and the console then shows every
#      worker line twice; RAY_TRAIN_ENABLE_PRINT_PATCH=0 leaves print alone.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_CHDIR_TO_TRIAL_DIR": "0", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}

# 3) Tune copies these from the driver's environment into every trial actor's runtime_env
#    (ray/tune/execution/class_cache.py ENV_VARS_TO_PROPAGATE), and Ray's runtime-env agent
#    logs runtime_envs in plain text. Trial actors do not need the copy: locally they
#    inherit the driver's environment through the raylet, and on a cluster each node has
#    its own credential chain. So the secrets stay out of Ray's logs.
AWS_SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}


class RayWorkaroundBroken(ImportError):
    """What a workaround relies on is gone from this Ray version."""


def _require(condition: bool, what: str, protects: str) -> None:
    if not condition:
        raise RayWorkaroundBroken(
            f"Ray {ray.__version__}: {what}. The workaround in orchestrator/ray_workarounds.py that {protects} "
            "would silently stop working; install ray==2.60.0 (pyproject.toml) or update the workaround."
        )


def _check() -> None:
    from ray._private import ray_constants
    from ray.train import constants as train_constants
    from ray.train._internal import session
    from ray.train.v2._internal import constants as train_v2
    from ray.train.v2._internal.execution import context as train_context
    from ray.tune.execution import class_cache

    _require(hasattr(ray_constants, "RAY_DEDUP_LOGS_SKIP_REGEX"), "ray_constants.RAY_DEDUP_LOGS_SKIP_REGEX is gone",
             "keeps Ray's per-report and cleaner lines off the console")
    _require(hasattr(ray_constants, "RAY_DEDUP_LOGS_ALLOW_REGEX"), "ray_constants.RAY_DEDUP_LOGS_ALLOW_REGEX is gone",
             "keeps every run's own lines from being merged into one")
    _require(getattr(getattr(train_context, "logger", None), "name", None) == train_context.__file__, "the 'Reporting training result' logger moved",
             "keeps Ray's per-report lines off the console")
    _require(isinstance(getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None), set), "tune.execution.class_cache.ENV_VARS_TO_PROPAGATE is gone",
             "keeps AWS secrets out of Ray's runtime-env logs")
    propagated = getattr(train_v2, "ENV_VARS_TO_PROPAGATE", set())
    _require(getattr(train_v2, "HEALTH_CHECK_INTERVAL_S_ENV_VAR", None) == "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" and "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in propagated,
             "Train V2 no longer reads or propagates RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "keeps each report() from waiting 2 s")
    _require(getattr(train_v2, "ENABLE_PRINT_PATCH_ENV_VAR", None) == "RAY_TRAIN_ENABLE_PRINT_PATCH" and "RAY_TRAIN_ENABLE_PRINT_PATCH" in propagated,
             "Train V2 no longer reads RAY_TRAIN_ENABLE_PRINT_PATCH", "keeps worker lines from printing twice")
    _require(getattr(train_constants, "RAY_CHDIR_TO_TRIAL_DIR", None) == "RAY_CHDIR_TO_TRIAL_DIR",
             "ray.train.constants.RAY_CHDIR_TO_TRIAL_DIR is gone", "keeps relative data paths working under ray job submit")
    reset = getattr(getattr(session, "_TrainSession", None), "reset", None)
    _require(callable(getattr(session, "get_session", None)) and reset is not None and "_inter_actor_queue" in reset.__code__.co_names,
             "the Train session's _inter_actor_queue is gone", "keeps a finished run's last result from being lost")


_check()


def set_train_env() -> None:
    """Call in the process that builds a TorchTrainer, before building it (values already set win)."""
    os.environ.update({k: v for k, v in TRAIN_ENV.items() if k not in os.environ})


def keep_credentials_out_of_ray_logs() -> None:
    """Stop Tune from copying AWS secrets into trial runtime_envs, which Ray logs."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - AWS_SECRETS


def wait_until_tune_has_the_last_result(timeout_s: float = 60.0) -> None:
    """Call at the end of a Tune function trainable that ran a TorchTrainer with TuneReportCallback.

    TuneReportCallback hands each result to Tune through a one-slot queue, and Tune stops
    draining it once the trainable returns: under load the final result (the last step, its
    checkpoint) was lost and a finished run looked unfinished. Wait until the slot is empty.
    """
    from ray.train._internal.session import get_session

    queue = get_session()._inter_actor_queue
    deadline = time.monotonic() + timeout_s
    while queue is not None and not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.05)
