"""The resolved plan: every run's hyperparameters and derived figures, printed before anything starts."""

from __future__ import annotations

from typing import Any

from jobs.model import count_parameters
from orchestrator.spec import ExperimentSpec, Run


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def describe_run(run: Run) -> str:
    spec = run.spec
    fields = spec.model_dump(mode="json")
    if spec.method == "full":
        fields.pop("lora")  # not used by a full fine-tune
    lines = [f"== {run.name}" + ("" if run.name == run.option else f"  (option {run.option})"), f"   overrides: {run.overrides or '(none: the base)'}"]
    width = max(len(k) for k in flatten(fields))
    lines += [f"   {key:<{width}}  {value}" for key, value in flatten(fields).items()]
    r = spec.resources
    effective = spec.data.batch_size * r.num_workers
    params = count_parameters(spec)
    if params is None:
        params_text = "unknown until the model is loaded (its config is not available offline)"
    else:
        trainable, total = params
        params_text = f"{trainable:,} of {total:,} ({trainable / total:.2%})"
    lines += [
        f"   -> effective batch      {effective} sequences ({spec.data.batch_size} x {r.num_workers} worker{'s' if r.num_workers > 1 else ''})",
        f"   -> tokens per step      {effective * spec.data.block_size:,}",
        f"   -> tokens in the run    {effective * spec.data.block_size * spec.run.steps:,}",
        f"   -> warmup steps         {spec.warmup_steps}",
        f"   -> trainable params     {params_text}",
        f"   -> resources            {r.num_workers} worker(s) x ({r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU)",
    ]
    return "\n".join(lines)


def describe(experiment: ExperimentSpec, runs: list[Run]) -> str:
    """The whole plan: experiment settings, then one block per run."""
    es = experiment.early_stopping
    head = [
        f"experiment   {experiment.name}: {len(runs)} run(s)" + (f", control {experiment.control}" if experiment.control else ""),
        f"storage      {experiment.storage.path}/{experiment.name}" + (f" (endpoint {experiment.storage.endpoint_url})" if experiment.storage.endpoint_url else ""),
        "early stop   " + (f"val loss > best + {es.min_delta} for {es.patience} eval(s) in a row, after {es.grace_evals} eval(s) of grace" if es.enabled else "off"),
        f"concurrency  {experiment.max_concurrent or 'as many runs as the cluster resources hold'}",
        "",
    ]
    return "\n".join(head) + "\n\n".join(describe_run(run) for run in runs)
