"""Where a sweep's time went (orchestrator.results.timing, the breakdown bench/orchestration.py reports): exact on
a folder of known times, and accounting for every run's time on the shared sweep. The figures themselves are
measured by running the bench (docs/BENCHMARKS.md)."""

import pytest

from contract.report import Report, Timers
from orchestrator.folder import ExperimentFolder, locate
from orchestrator.results.timing import breakdown
from orchestrator.spec import load


def test_the_breakdown_of_known_times(tmp_path):
    """Launched at t=100: `current` starts at 101, takes its first step at 111 and reports last at 191; `full_finetune`
    starts at 105, first step at 135, last report at 175; a third run never reported."""
    sets = [f"storage.path={tmp_path}", "control_seeds=2", "option_seeds=1"]
    experiment, plan = load("specs/smoke.yaml", sets, ["current", "full_finetune"])
    folder = ExperimentFolder(experiment.storage, experiment.name)
    folder.start(experiment, plan, fresh=False)
    ran = {
        "current[seed=0]": (101.0, 111.0, 191.0, Timers(setup=4.0, train=60.0, eval=10.0, checkpoint=2.0, report=4.0)),
        "full_finetune": (105.0, 135.0, 175.0, Timers(setup=20.0, train=30.0, eval=5.0, checkpoint=1.0, report=2.0)),
    }
    for run, (started, first_step_at, reported_at, timers) in ran.items():
        folder.write_state(run, {"state": "finished", "since": reported_at, "started": started})
        last = Report(step=60, total_steps=60, first_step_at=first_step_at, reported_at=reported_at, timers=timers)
        folder.write_history(run, [last])
    folder.write_state("current[seed=1]", {"state": "running", "since": 120.0, "started": 120.0})

    result = breakdown(folder, plan, launched=100.0)
    current, full = result["runs"]
    assert (current["run"], full["run"]) == ("current[seed=0]", "full_finetune")  # the one that never reported: out
    assert (current["startup_s"], current["in_worker_s"], current["after_first_step_s"]) == (10.0, 4.0, 80.0)
    shares = ("train_share", "eval_share", "checkpoint_share", "report_share", "idle_share")
    assert [current[k] for k in shares] == pytest.approx([60 / 80, 10 / 80, 2 / 80, 4 / 80, 4 / 80])
    assert (full["startup_s"], full["after_first_step_s"]) == (30.0, 40.0)
    assert [full[k] for k in shares] == pytest.approx([30 / 40, 5 / 40, 1 / 40, 2 / 40, 2 / 40])
    assert (result["launch_to_first_step_s"], result["launch_to_last_first_step_s"]) == (11.0, 35.0)
    # 40 s of start-up in the 160 s the two runs held their slots
    assert result["startup_share_of_run_time"] == pytest.approx(40 / 160)


@pytest.mark.ray
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
