"""``--status``: how an experiment is going, read from its storage (local or ``s3://``), from any machine.

Per run: step/total, the latest and best val loss, its state and an ETA from its last
evaluations. Works while the sweep runs (the driver rewrites each run's history after
every evaluation) and after it.
"""

from __future__ import annotations

import math

from orchestrator.folder import ExperimentFolder
from orchestrator.results.progress import RunProgress, plain_table, progress_table
from orchestrator.results.records import collect
from orchestrator.spec import Plan


def progress(folder: ExperimentFolder, plan: Plan) -> list[RunProgress]:
    """Each run's progress, from the same records the report is built from, and the driver's record of which runs are
    running."""
    out = []
    for run, record in zip(plan.runs, collect(folder, plan)):
        status = record.status
        if status == "incomplete":  # not finished: running, waiting for a slot, or interrupted
            status = "running" if record.driver_state == "running" else "incomplete" if record.reports else "queued"
        vals = [h.val_loss for h in record.reports if h.val_loss is not None]
        p = RunProgress(
            run.name,
            step=record.steps,
            total=record.total_steps,
            status=status,
            val=vals[-1] if vals else math.nan,
            best=min(vals) if vals else math.inf,
            node=record.node,
        )
        # step 0 is reported before the first step, so an interval from it would count the start-up as training
        timed = [h for h in record.reports if h.reported_at is not None and h.step > 0]
        if status == "running" and len(timed) >= 2:
            a, b = timed[-2], timed[-1]
            p.rate = (b.step - a.step) / max(b.reported_at - a.reported_at, 1e-9)
        out.append(p)
    return out


def show(folder: ExperimentFolder, plan: Plan) -> str:
    """The progress table of every run, under a line saying where the experiment is and how far it got."""
    runs = progress(folder, plan)
    done = sum(r.status not in ("running", "queued") for r in runs)
    head = f"experiment {folder.name} in {folder.storage.path}: {done}/{len(runs)} run(s) done"
    return head + "\n" + plain_table(progress_table(runs))
