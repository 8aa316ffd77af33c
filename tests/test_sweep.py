"""The sweep on a real local Ray instance: early stop, divergence, failure, queueing, and the report."""

import json
import re
from pathlib import Path

import pytest
import yaml

from orchestrator.launch import main

pytestmark = pytest.mark.ray

SPEC = {
    "name": "behaviour",
    "control": "healthy",
    "max_concurrent": 1,  # more trials than slots: each waits for the one before to end
    "early_stopping": {"min_delta": 0.05, "patience": 1, "grace_evals": 1},
    "base": {
        "model": {"name": "tiny-gpt2", "init": "random"},
        "run": {"steps": 30, "eval_every": 5, "checkpoint_every": 10},
        "optim": {"lr": 5.0e-3},
    },
    "options": {
        # full fine-tuning at lr 1.0: val 136 at step 5, then 170 at step 10
        "regress": {"method": "full", "lora": None, "optim": {"lr": 1.0, "grad_clip": None}},
        "healthy": {},
        "diverge": {"method": "full", "lora": None, "optim": {"lr": 1.0e8, "grad_clip": None}},
        "broken": {"lora": {"target_modules": ["no_such_module"]}, "run": {"max_failures": 0}},
    },
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = root / "behaviour.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    code = main([str(spec), "--local", "--set", f"storage.path={root / 'out'}"])
    return code, root / "out" / "behaviour"


def _runs(folder: Path) -> dict:
    return {r["run"]: r for r in json.loads((folder / "summary.json").read_text())["runs"]}


def test_a_regressing_run_is_stopped_with_its_reason(sweep):
    code, folder = sweep
    assert code == 0  # failed runs are recorded, the sweep itself succeeds
    run = _runs(folder)["regress"]
    assert run["status"] == "early_stopped"
    assert run["steps"] < run["total_steps"]
    assert re.fullmatch(r"val [\d.]+ at step 10 > best [\d.]+ at step 5 \(\+[\d.]+%, patience 1\)", run["reason"])


def test_a_healthy_run_is_not_stopped(sweep):
    run = _runs(sweep[1])["healthy"]
    assert (run["status"], run["steps"], run["reason"]) == ("completed", 30, None)
    assert run["best_checkpoint"] and Path(run["best_checkpoint"]).is_dir()


def test_divergence_and_a_raising_trial_are_recorded_not_fatal(sweep):
    runs = _runs(sweep[1])
    assert runs["diverge"]["status"] == "diverged"
    assert re.fullmatch(r"diverged at step \d+: non-finite training loss", runs["diverge"]["reason"])
    assert runs["broken"]["status"] == "failed"
    assert "match no module" in runs["broken"]["reason"]


def test_a_stopped_trial_frees_its_slot_for_the_next(sweep):
    folder = sweep[1]
    spans = {}
    for result in folder.glob("*/result.json"):
        stamps = [json.loads(line)["timestamp"] for line in result.read_text().splitlines()]
        if stamps:
            spans[result.parent.name] = (stamps[0], stamps[-1])
    assert {"regress", "healthy", "diverge"} <= set(spans)
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    for (_, (_, end)), (_, (start, _)) in zip(ordered, ordered[1:]):
        assert start >= end  # one slot: a trial reports only once the one before has ended
    stopped_at = spans["regress"][1]
    assert any(start >= stopped_at for start, _ in spans.values())  # the queued trial ran after the early stop


def test_the_report_ranks_runs_and_says_what_to_take(sweep):
    folder = sweep[1]
    report = (folder / "report.md").read_text()
    assert "| # | run | status | best val | Δ vs control |" in report
    assert "**regress** (early_stopped): val" in report
    assert re.search(r"Take \*\*\w+\*\*|None of the fixes|No fix clearly", report)
    assert (folder / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
