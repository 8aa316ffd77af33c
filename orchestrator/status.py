"""``--status``: how an experiment is going, read from its storage (local or ``s3://``), from any machine.

Per run: step/total, the latest and best val loss, its state and an ETA from its last
evaluations. Works while the sweep runs (the driver rewrites each run's history after
every evaluation) and after it.
"""

from __future__ import annotations

import math

from orchestrator import history
from orchestrator.console import RunProgress, plain_table, progress_table
from orchestrator.records import finite
from orchestrator.scheduler import load_state
from orchestrator.spec import ExperimentSpec, Plan, dir_name


def progress(experiment: ExperimentSpec, plan: Plan) -> list[RunProgress]:
    _, stopped = load_state(experiment.storage, experiment.name)
    out = []
    for run in plan.runs:
        rows = history.read(experiment.storage, experiment.name, dir_name(run.name))
        state = history.read_state(experiment.storage, experiment.name, dir_name(run.name)).get("state")
        p = RunProgress(run.name, total=run.spec.run.steps, status="queued")
        vals = [finite(r.get("val_loss")) for r in rows if finite(r.get("val_loss")) is not None]
        if rows:
            p.step = int(rows[-1]["step"])
            p.val = vals[-1] if vals else math.nan
            p.best = min(vals) if vals else math.inf
        p.status = _status(state, rows, run.name in stopped, p.step, p.total)
        timed = [r for r in rows if isinstance(r.get("reported_at"), (int, float)) and int(r["step"]) > 0]
        if p.status == "running" and len(timed) >= 2:
            a, b = timed[-2], timed[-1]
            p.rate = (int(b["step"]) - int(a["step"])) / max(b["reported_at"] - a["reported_at"], 1e-9)
        out.append(p)
    return out


def _status(state: str | None, rows: list[dict], stopped: bool, step: int, total: int) -> str:
    if state == "failed":
        return "failed"
    if rows and rows[-1].get("diverged"):
        return "diverged"
    if stopped:
        return "early_stopped"
    if step >= total:
        return "completed"
    if state == "running":
        return "running"
    if state == "finished" or rows:
        return "incomplete"
    return "queued"


def show(experiment: ExperimentSpec, plan: Plan) -> str:
    runs = progress(experiment, plan)
    done = sum(r.status not in ("running", "queued") for r in runs)
    head = f"experiment {experiment.name} in {experiment.storage.path}: {done}/{len(runs)} run(s) done"
    return head + "\n" + plain_table(progress_table(runs))
