"""A sweep on a cluster that grows: worker nodes come up as the sweep asks for them, and its runs train at once.

The cluster is Ray's own autoscaler with its fake multi-node provider (tests/raynodes.py), the way Ray's
autoscaler tests run one: a head with no CPUs for runs, as `ray up cluster.yaml` starts it, and one worker type
of 2 CPUs, none at first, at most 3. Three runs of one CPU each need two such nodes. The launcher connects to it
as the driver of `ray job submit` does (RAY_ADDRESS), and the runs checkpoint to SeaweedFS.

What is measured comes from the two records that cannot be arranged by the test: how many worker nodes were
alive at once, from Ray's own node table (every node's start and end), and how many runs trained at once, from
the runs' own records (each evaluation's wall-clock time, written by the worker).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contract.spec import StorageSpec
from devtools.seaweed import ACCESS_KEY, SECRET_KEY
from orchestrator.folder import ExperimentFolder
from tests.conftest import BEHAVIOUR, launch
from tests.raynodes import AutoscalingCluster

pytestmark = [pytest.mark.ray, pytest.mark.s3]

RUNS = 3
NODE_CPUS = 2
# Three tiny runs of one CPU each (the shared sweep's settings, shorter): the runs, not their training, are tested.
SPEC = {
    "name": "autoscaling",
    "control": "current",
    "control_seeds": RUNS,
    "early_stopping": {"enabled": False},
    "evaluation": {"context": 64, "max_documents": 4},
    "base": {
        **BEHAVIOUR["base"],
        # absolute: the driver is no `ray job submit` job, whose working_dir would make a relative path work
        "data": {
            "path": str(Path("sources/training_data_final_merged.md").resolve()),
            "block_size": 64,
            "batch_size": 8,
        },
        "run": {"steps": 10, "eval_every": 5, "checkpoint_every": 10},
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
    },
    "options": {"current": {}},
}


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = most = 0
    for _, change in events:  # at the same instant an end sorts first: touching intervals do not overlap
        now += change
        most = max(most, now)
    return most


def test_most_at_once_counts_overlaps_only():
    assert most_at_once([(0, 1), (1, 2), (2, 3)]) == 1
    assert most_at_once([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert most_at_once([(0, 10), (1, 2), (3, 4), (1.5, 3.5)]) == 3


def test_the_plan_says_a_cluster_gets_every_run_at_once(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**SPEC, "storage": {"path": str(tmp_path)}}))
    plan = launch(tmp_path / "spec.yaml", "--dry-run", timeout=120)  # no --local: the plan for a cluster
    assert plan.returncode == 0, plan.stderr
    (line,) = [line for line in plan.stdout.splitlines() if line.startswith("concurrency")]
    assert line.startswith(f"concurrency  all {RUNS} runs offered at once (on a cluster: each run's demand")


def _training(folder: ExperimentFolder, run: str) -> tuple[float, float]:
    """When a run trained: from its first step to its last report, as its worker recorded them."""
    rows = folder.history(run)
    assert rows, f"{run} reported nothing"
    return rows[0].first_step_at, rows[-1].reported_at


def test_a_sweep_grows_the_cluster_and_trains_its_runs_at_once(s3_env, tmp_path):
    storage = {"path": "s3://sweeps/autoscaling", "endpoint_url": s3_env.endpoint}
    spec = {**SPEC, "storage": storage}
    spec_file = tmp_path / "autoscaling.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    cluster = AutoscalingCluster()
    cluster.env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
    try:
        cluster.start_head(
            worker_types={"cpu2": {"resources": {"CPU": NODE_CPUS}, "min_workers": 0, "max_workers": RUNS}}
        )
        assert cluster.most_workers_at_once() == 0  # the head alone: the sweep's demand must bring the nodes
        out = launch(spec_file, env={**cluster.env, "RAY_ADDRESS": cluster.gcs_address}, timeout=600)
        nodes = cluster.most_workers_at_once()
    finally:
        cluster.stop()
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert f"running {RUNS} run(s), all {RUNS} runs offered at once (on a cluster:" in out.stdout
    folder = ExperimentFolder(StorageSpec(**storage), "autoscaling")
    _, plan = folder.plan()
    intervals = [_training(folder, run.name) for run in plan.runs]
    trained = most_at_once(intervals)
    zero = min(start for start, _ in intervals)
    trains = ", ".join(f"{start - zero:.1f}-{end - zero:.1f} s" for start, end in intervals)
    print(f"worker nodes alive at once: {nodes}; runs trained at once: {trained} ({trains})")
    assert nodes >= 2, f"the autoscaler brought up {nodes} worker node(s) at once"
    assert trained >= 2, f"at most {trained} run(s) trained at once"
