"""The calibration bench: its in-process training is a sweep's, and it counts the configurations it says it does."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from bench.calibration import draws, seeded_jobs, train_in_process
from orchestrator.launch import localize
from orchestrator.spec import load


@pytest.mark.ray
def test_in_process_training_gives_a_sweeps_per_document_losses(behaviour):
    """The same run, trained in this process and as a trial of the shared sweep: the same losses, bit for bit,
    and without starting Ray here (which would cost every draw of the bench and clash with a later ray.init)."""
    import ray

    folder = behaviour[1]
    experiment, plan = load(str(folder.parent.parent / "behaviour.yaml"))
    plan = localize(experiment, plan, gpus=0, cores=1).plan
    metrics = train_in_process(seeded_jobs(experiment, plan, "current", [0])[0])
    swept = json.loads((folder / "current-seed_0" / "history.json").read_text())[-1]
    assert metrics["step"] == swept["step"] == 30
    assert metrics["doc_nll"] == swept["doc_nll"]
    assert not ray.is_initialized()


def test_every_configuration_gives_each_side_its_own_seeds():
    rng = np.random.default_rng(0)
    every = draws(5, control_seeds=2, option_seeds=1, options=2, limit=1000, rng=rng)
    assert len(every) == 30  # 10 pairs for the control, then 3 choose 2 for two interchangeable options
    assert len({(c, tuple(g)) for c, g in every}) == 30
    sampled = draws(16, control_seeds=2, option_seeds=2, options=6, limit=50, rng=rng)
    assert len(sampled) == 50
    for control, groups in every + sampled:
        seeds = list(itertools.chain(control, *groups))
        assert len(seeds) == len(set(seeds))  # never one seed on two sides
    assert draws(3, control_seeds=2, option_seeds=1, options=2, limit=1000, rng=rng) == []  # not enough seeds


def test_the_bench_trains_small_and_writes_its_figures(tmp_path):
    tiny = [
        "--set",
        "run.steps=20",
        "--set",
        "run.eval_every=20",
        "--set",
        "run.checkpoint_every=20",
    ]  # lr_schedule: 1 warmup step
    out = subprocess.run(
        [sys.executable, "-m", "bench.calibration", "--seeds", "3", "--control-seeds", "2", "--option-seeds", "1"]
        + [*tiny, "--resamples", "200", "--json", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    figures = json.loads((tmp_path / "c.json").read_text())
    one, *more = figures["configurations"]
    assert (one["options"], one["control_seeds"], one["option_seeds"], one["n"]) == (1, 2, 1, 3)
    assert 0 <= one["coverage"] <= 1 and 0 <= one["false_take_rate"] <= 1
    assert [(r["options"], r["n"], r["coverage"]) for r in more] == [(2, 0, None), (6, 0, None)]  # 3 seeds: too few
    assert figures["power"]["option"] == "lr_schedule" and figures["power"]["configurations"][0]["n"] == 3
    assert "| 1 | 2 | 1 | 3 |" in out.stdout
