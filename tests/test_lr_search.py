"""An LR search on a real local Ray instance, as small as it gets: one option with two arms, pruned at its one rung."""

import json

import pytest
import yaml

from tests.conftest import launch, runs_of, summary

pytestmark = pytest.mark.ray

SEARCH = {
    "name": "search",
    "control": "current",
    "control_seeds": 1,
    # One run at a time, in the plan's order: the good arm reaches the rung before the hot one, so the hot one is
    # ranked against it and pruned (asynchronous halving decides as arms arrive).
    "max_concurrent": 1,
    "early_stopping": {"enabled": False},  # pruned by the search, not stopped as a regression
    "evaluation": {"context": 128, "selection_fraction": 0.5},
    "lr_search": {"factors": None, "lrs": {"lora": [2.0e-3, 0.1]}},
    "base": {
        "lora": {"rank": 8, "alpha": 16.0},
        "data": {"block_size": 64, "batch_size": 8},  # a quarter of the default tokens: the search is tested
        "optim": {"lr": 2.0e-3},
        "run": {"steps": 20, "eval_every": 10, "checkpoint_every": 10},
    },
    "options": {"current": {}, "lora": {"lora": {"rank": 16, "alpha": 32.0}}},
}


def test_a_search_prunes_its_worse_arm_at_the_rung_and_reports_the_lr_it_chose(tmp_path):
    spec = {**SEARCH, "storage": {"path": str(tmp_path / "out")}}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = launch(tmp_path / "search.yaml", "--local", timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    folder = tmp_path / "out" / "search"
    hot = runs_of(folder)["lora[lr=0.1]"]
    assert (hot["status"], hot["steps"]) == ("pruned", 10)  # stopped at the rung, its slot freed
    assert hot["reason"].startswith("pruned at rung 1 (step 10): val ")
    assert "[lora[lr=0.1]] pruned at rung 1 (step 10)" in out.stdout
    search = next(v for v in summary(folder.parent, "search")["variants"] if v["option"] == "lora")
    assert search["variant"] == "lora[lr=0.002]" and search["lr_search"]["chosen_lr"] == 0.002
    assert search["lr_search"]["at_edge"] and search["lr_search"]["pruned_at"] == {"10": 1}
    # chosen at the edge on one seed: two seeds of it before a range above or below is worth trying
    assert search["lr_search"]["edge_check"].startswith("run lr 0.002 on 2 seeds (an option with optim.lr: 0.002")
    # one control seed and one-seed arms, no stored calibration of 20 steps: no seed noise measured, and no take
    verdict = summary(folder.parent, "search")["verdict"]
    assert verdict["take"] is None and "seed noise is not measured" in verdict["reason"]
    assert json.loads((folder / "lr_search.json").read_text())["pruned"].keys() == {"lora[lr=0.1]"}
    assert "## Learning-rate search" in (folder / "report.md").read_text()
