"""The driver: the experiment spec, launch, the Tune sweep, early stopping, the verdict, the report and diagnosis.

The public surface is the spec models (:mod:`orchestrator.spec`, with the run-level parts
in :mod:`contract.spec`), ``python -m orchestrator.launch`` and :func:`orchestrator.launch.run`,
``python -m orchestrator.diagnose`` and ``python -m orchestrator.export``; everything else is
an implementation detail. Nothing in ``jobs`` (the worker) imports from here.
"""

import os
import sys

# Ray's console settings, in one place that runs before anything of ours can import Ray: this
# package's __init__, whichever of its modules is imported first. Ray reads some when it is
# imported (the dedup regex, Tune's slow-callback threshold), the others when it uses them;
# values already set win.
# - RAY_DEDUP_LOGS_SKIP_REGEX: the raylet warns on the driver's console every time more Python
#   workers start than it has cores, which a sweep does by design (each run starts several);
# - RAY_COLOR_PREFIX=0 when the output is not a terminal: what the raylet does tell the driver
#   (a lost node, an out-of-memory kill) is printed without colour codes;
# - RAY_AIR_NEW_OUTPUT=0 drops Tune's banner table and its TensorBoard hint, which points
#   into a temporary session folder that is gone after the run;
# - TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: Tune's default CSV logger fixes its columns at the
#   first result (the step-0 evaluation, which has no train loss) and silently drops the
#   rest, and its TensorBoard logger writes every list as a histogram; the sweep adds Tune's
#   JSON logger and its own TensorBoard writer (sweep/callbacks.py) instead;
# - TUNE_WARN_THRESHOLD_S=5: Tune warns (4 lines each time) when a callback takes over 0.5 s;
#   ours write each run's history to storage, S3 included, after every evaluation;
# - TUNE_PRINT_ALL_TRIAL_ERRORS=0: a failed run's whole traceback (with Ray's colour codes) is in
#   its error.txt; the console says the run failed, its error, and where that file is.
# Workers' own output never reaches the console (sweep/trial.py connect(): log_to_driver=False).
CONSOLE_ENV = {
    "RAY_DEDUP_LOGS_SKIP_REGEX": "worker processes have been started on node",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_WARN_THRESHOLD_S": "5",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
    **({} if sys.stdout.isatty() else {"RAY_COLOR_PREFIX": "0"}),
}
for _name, _value in CONSOLE_ENV.items():
    os.environ.setdefault(_name, _value)
