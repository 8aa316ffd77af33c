"""A run in an MLflow tracking store, named as MLflow names it: ``runs:/<run_id>``, with the store from
``MLFLOW_TRACKING_URI`` as the MLflow client reads it (``sqlite:///mlflow.db``, ``file:///path/mlruns``,
``http://host:5000``; ``./mlruns`` when unset). Each metric's full history is read; the values logged at one step
become one record. The Trainer's MLflow callback logs ``loss``, ``eval_loss``, ``learning_rate``, ``grad_norm``,
``epoch``, and the end-of-run summary at the last step; Lightning's logger logs the names the model logs. Needs the
MLflow client: ``pip install 'plateau-sweep[tracking]'``.
"""

from __future__ import annotations

from orchestrator.diagnose.logs.curve import LogError, Record, Rows

SCHEME = "runs:/"


def is_run_uri(source: str) -> bool:
    return source.startswith(SCHEME)


def read(source: str) -> Rows:
    run_id = source.removeprefix(SCHEME).strip("/").split("/")[0]
    if not run_id:
        raise LogError(f"{source}: no run id; name a run as runs:/<run_id>")
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise LogError(
            f"{source}: reading an MLflow run needs the MLflow client: pip install 'plateau-sweep[tracking]'"
        ) from None
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
        histories = {key: client.get_metric_history(run_id, key) for key in run.data.metrics}
    except MlflowException as err:
        raise LogError(
            f"{source}: not found in the tracking store {client.tracking_uri} ({err.message.splitlines()[0]}); set "
            "MLFLOW_TRACKING_URI to the store the run was logged to"
        ) from None
    by_step: dict[int, dict[str, float]] = {}
    for key, history in histories.items():
        for metric in sorted(history, key=lambda m: (m.step, m.timestamp)):
            by_step.setdefault(metric.step, {})[key] = metric.value
    records = [Record(f"step {step}", {"step": step, **values}) for step, values in sorted(by_step.items())]
    name = run.info.run_name or run_id
    return Rows(f"MLflow run `{name}` in {client.tracking_uri}", records)
