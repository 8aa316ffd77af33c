"""Where a finished sweep's time went: each run's start-up, and its time after the first step by phase.

Read from the experiment's folder (each run's reports and states), so it describes any sweep
from storage; ``bench/orchestration.py`` measures the launcher with it (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

from orchestrator.folder import ExperimentFolder
from orchestrator.spec import Plan

PHASES = ("train", "eval", "checkpoint", "report")  # contract.report.Timers after the first step (setup is before it)


def breakdown(folder: ExperimentFolder, plan: Plan, launched: float) -> dict[str, Any]:
    """The time the sweep in ``folder`` spent, from its runs' last reports and states; ``launched`` is when the
    command started (seconds since the epoch). Runs that never reported are left out.

    Per run: its start-up (its trial starting to its first step), the part of it in its worker (``in_worker_s``),
    the time after its first step, and the share of that in each phase, the rest idle. For the sweep: launch to the
    first and to the last run's first step, and the share of the runs' time in their slots spent starting up.
    """
    runs = []
    for run in plan.runs:
        reports, state = folder.history(run.name), folder.state(run.name)
        if not reports or "started" not in state:
            continue
        last = reports[-1]
        after = last.reported_at - last.first_step_at
        parts = {k: getattr(last.timers, k) for k in PHASES}
        runs.append(
            {
                "run": run.name,
                "startup_s": last.first_step_at - state["started"],
                "in_worker_s": last.timers.setup,
                "after_first_step_s": after,
                **{f"{k}_share": v / after for k, v in parts.items()},
                "idle_share": 1 - sum(parts.values()) / after,
                "first_step_at": last.first_step_at,
                "ended_at": last.reported_at,
            }
        )
    startup = sum(r["startup_s"] for r in runs)
    return {
        "runs": runs,
        "launch_to_first_step_s": min(r["first_step_at"] for r in runs) - launched,
        "launch_to_last_first_step_s": max(r["first_step_at"] for r in runs) - launched,
        # of the time the runs held a slot, the share spent starting up
        "startup_share_of_run_time": startup / sum(r["startup_s"] + r["after_first_step_s"] for r in runs),
    }
