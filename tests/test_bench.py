"""The benchmarks' own arithmetic, on the shared sweep's history (the figures themselves are measured by running
the scripts, docs/BENCHMARKS.md)."""

import pytest

from bench.orchestration import breakdown
from orchestrator.folder import locate

pytestmark = pytest.mark.ray


def test_the_orchestration_breakdown_accounts_for_every_runs_time(behaviour):
    folder = locate(str(behaviour[1]))
    _, plan = folder.plan()
    launched = min(folder.state(r.name)["started"] for r in plan.runs) - 1.0
    result = breakdown(folder, plan, launched)
    finished = {r["run"] for r in result["runs"]}
    assert {"current[seed=0]", "two_workers", "hot_lr"} <= finished  # every run that reported, stopped ones too
    for r in result["runs"]:
        shares = [r[f"{k}_share"] for k in ("train", "eval", "checkpoint", "report", "idle")]
        assert all(s >= 0 for s in shares[:-1]) and sum(shares) == pytest.approx(1.0)
        assert r["train_share"] > 0.5  # training steps, not the machinery, take a run's time once it trains
        assert 0 < r["in_worker_s"] < r["startup_s"]  # the worker's own set-up is part of the run's start-up
    assert 1.0 < result["launch_to_first_step_s"] <= result["launch_to_last_first_step_s"]
    assert 0 < result["startup_share_of_run_time"] < 1
