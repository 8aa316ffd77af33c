"""The shared sweep on a real local Ray instance (tests/conftest.py BEHAVIOUR): the verdict, the evaluation
protocol, resources that must not change results, early stopping, failures, queueing, the report, the console
and tracking."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contract.spec import JobConfig, StorageSpec
from orchestrator.folder import ExperimentFolder
from orchestrator.spec import load
from tests.conftest import BEHAVIOUR, runs_of, summary

pytestmark = pytest.mark.ray


def _summary(folder: Path) -> dict:
    return summary(folder.parent, folder.name)


def test_the_sweep_finishes_with_failed_runs_recorded_not_fatal(behaviour):
    code, folder, log = behaviour[:3]
    assert code == 0, log[-4000:]
    runs = runs_of(folder)
    assert runs["broken"]["status"] == "failed" and "match no module" in runs["broken"]["reason"]
    assert runs["diverge"]["status"] == "diverged"
    assert re.fullmatch(r"diverged at step \d+: non-finite training loss", runs["diverge"]["reason"])


def test_a_truly_better_option_is_taken_with_an_interval_that_excludes_zero(behaviour):
    summary = _summary(behaviour[1])
    assert summary["verdict"]["take"] == "full"
    full = runs_of(behaviour[1])["full"]["delta_vs_control"]
    assert full["ci95"][1] < 0 and full["p_holm"] < 0.05
    assert summary["verdict"]["reason"].startswith("Take **full**")


def test_an_option_that_differs_from_the_control_only_in_its_seed_is_not_taken(behaviour):
    summary = _summary(behaviour[1])
    aa = runs_of(behaviour[1])["same_but_seed"]["delta_vs_control"]
    assert aa["ci95"][0] <= 0 <= aa["ci95"][1] or aa["p_holm"] >= 0.05
    assert "same_but_seed" not in summary["verdict"]["candidates"]
    assert summary["control_seed_std"] is not None  # three control seeds: the spread is measured


def test_every_run_is_scored_on_the_same_tokens_whatever_its_block_size(behaviour):
    summary = _summary(behaviour[1])
    assert (summary["evaluation"]["context"], summary["evaluation"]["stride"]) == (256, 128)  # the largest block
    tokens = {name: r["eval_tokens"] for name, r in runs_of(behaviour[1]).items() if r["eval_tokens"] is not None}
    assert tokens["long_context"] == tokens["current[seed=0]"] == summary["evaluation"]["eval_tokens"]
    assert len(set(tokens.values())) == 1


def test_lora_lowers_the_val_loss_by_a_clear_margin(behaviour):
    """The pretrained demo model learns the corpus: LoRA r8 gains at least 0.05 nats per token in 30 steps,
    more than ten times the spread between the control's seeds."""
    spread = _summary(behaviour[1])["control_seed_std"]
    for seed in (0, 1):
        run = runs_of(behaviour[1])[f"current[seed={seed}]"]
        gain = run["first_val_loss"] - run["compared_loss"]  # both on the scoring documents
        assert gain >= 0.05 and gain > 10 * spread


def test_splitting_the_batch_over_micro_batches_or_workers_changes_nothing(behaviour):
    """1 worker x 16, 1 worker x 2 x 8 accumulated, 2 workers x 8: the same losses, to 1e-4."""
    runs = runs_of(behaviour[1])
    one, micro, two = runs["current[seed=0]"], runs["micro_batches"], runs["two_workers"]
    assert (micro["micro_batch_size"], micro["accumulation_steps"], two["micro_batch_size"]) == (8, 2, 8)
    for a, b in ((one, micro), (one, two)):
        assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]] == [0, 10, 20, 30]
        for x, y in zip(a["history"], b["history"]):
            assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-4)
            if x["train_loss"] is not None:
                assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-4)


def test_a_far_too_high_learning_rate_is_stopped(behaviour):
    """100x the control's LR: val jumps (4.4 to 8.2 on the demo model) and the run stops at its first check."""
    run = runs_of(behaviour[1])["hot_lr"]
    assert run["status"] == "early_stopped"
    assert re.fullmatch(r"val [\d.]+ at step 10 > best [\d.]+ at step 0 \(\+[\d.]+%, patience 1\)", run["reason"])
    assert [h["step"] for h in run["history"]] == [0, 10] and run["steps"] < run["total_steps"]


def test_a_stopped_trial_frees_its_slot_for_a_queued_one(behaviour):
    """hot_lr is stopped at its step-10 evaluation while runs are still queued: its trial ends before it would have
    reported its next evaluation, a queued run starts in the slot it freed, and never do more runs go at once than
    max_concurrent.

    From the driver's record of each run (state.json: when its trial started, when it ended) and hot_lr's own
    reports (history.json: when each was made)."""
    folder = ExperimentFolder(StorageSpec(path=str(behaviour[1].parent)), behaviour[1].name)
    _, plan = folder.plan()
    spans = {run.name: (state["started"], state["since"]) for run in plan.runs if (state := folder.state(run.name))}
    assert len(spans) == len(plan.runs)
    events = sorted([(start, 1) for start, _ in spans.values()] + [(end, -1) for _, end in spans.values()])
    at_once = [sum(change for _, change in events[: i + 1]) for i in range(len(events))]
    assert max(at_once) == BEHAVIOUR["max_concurrent"]  # the slots are used, and never more than there are
    reports = {r.step: r for r in folder.history("hot_lr")}
    assert sorted(reports) == [0, 10]  # stopped at its first evaluation after step 0 (grace 1, patience 1)
    decided, ended = reports[10].reported_at, spans["hot_lr"][1]
    pace = decided - reports[0].reported_at  # 10 steps and an evaluation of hot_lr, on this machine, in this sweep
    assert ended - decided < pace  # the stop ended its trial: it did not train on to its next evaluation
    assert any(start >= ended for start, _ in spans.values())  # runs were still queued: one took the freed slot


def test_the_report_explains_each_run_and_writes_the_next_experiment(behaviour):
    folder = behaviour[1]
    report = (folder / "report.md").read_text()
    assert "| # | option | seeds | status | val at step 0 → compared | Δ vs control [95% CI, unadjusted] |" in report
    assert "## Why each run won or lost" in report
    assert re.search(
        r"- \*\*full\*\* changes lora \{\.\.\.\} → null, method lora → full, optim.lr 0.002 → 0.0005: Δ -\d\.\d{4} "
        r"\(95% CI \[-",
        report,
    )
    assert (
        "- **hot_lr** changes optim.lr 0.002 → 0.2: early-stopped (val" in report
        or "- **hot_lr** changes optim.lr 0.002 → 0.2: diverged" in report
    )
    assert "- **broken** changes lora.target_modules" in report and "failed:" in report
    follow = _summary(folder)["follow_up_spec"]
    assert (
        follow == "behaviour-confirm.yaml" and f"    python -m orchestrator.launch {folder / follow}\n" in report
    )  # runnable from anywhere
    experiment, plan = load(str(folder / follow))  # it validates as written
    assert experiment.control == "current" and experiment.control_seeds == 3  # the control keeps its name
    assert experiment.tracking.mlflow_uri == behaviour[3]  # and the curves go where the sweep's went
    assert {r.option for r in plan.runs} == {"current", "full"}
    assert all(r.spec.run.steps == 60 for r in plan.runs)  # twice the steps
    assert (folder / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_console_is_the_projects_own_lines(behaviour):
    log = behaviour[2]
    assert "Reporting training result" not in log  # Ray Train's per-report dicts stay in Ray's log files
    assert "State API may be temporarily unavailable" not in log
    assert "[current[seed=0]] step 10/30  val " in log
    for run in ("current[seed=0]", "current[seed=1]"):  # names that differ only in a digit, which Ray's dedup ignores
        assert log.count(f"[{run}] data: ") == 1, run  # once per run: not twice, and not merged into another run's
    # every line of ours is printed by the driver, plain: no colour codes, no Ray process prefix, through a pipe
    assert "\x1b[" not in log and "RayTrainWorker pid=" not in log


def test_tensorboard_has_every_runs_curves(behaviour):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = behaviour[1]
    events = EventAccumulator(str(folder / "current-seed_0")).Reload()
    assert [e.step for e in events.Scalars("loss/val")] == [0, 10, 20, 30]
    assert {"loss/train", "optim/lr", "optim/clip_rate"} <= set(events.Tags()["scalars"])
    assert len([p for p in folder.glob("*/events.out.tfevents.*")]) >= 8


def test_mlflow_gets_one_run_per_sweep_run(behaviour):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=behaviour[3])
    experiment = client.get_experiment_by_name("behaviour")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 11
    names = {r.data.tags["trial_name"] for r in runs}
    assert "current-seed_0" in names and "two_workers" in names
    control = next(r for r in runs if r.data.tags["trial_name"] == "current-seed_0")
    assert [(m.step, round(m.value, 4)) for m in client.get_metric_history(control.info.run_id, "loss/val")] == [
        (h["step"], round(h["val_loss"], 4)) for h in runs_of(behaviour[1])["current[seed=0]"]["history"]
    ]
    assert control.info.status == "FINISHED"


def test_the_clip_column_shows_whether_the_clip_engaged(behaviour):
    table = next(
        block for block in (behaviour[1] / "report.md").read_text().split("\n\n") if block.startswith("| # | option")
    )
    lines = [line.split("|") for line in table.splitlines() if not line.startswith("|---")]
    clipped = [cell.strip() for cell in lines[0]].index("clipped")
    rows = {cells[2].strip(): cells for cells in lines[1:]}
    assert rows["current"][clipped].strip() == "0%"  # LoRA's norm stays below 1.0: loosening the clip could not matter
    assert rows["full"][clipped].strip() == "100%"  # full fine-tuning is clipped at every step


def test_each_report_stays_cheap(behaviour):
    """Ray Train makes report() wait for its controller's poll (2 s by default); the trial sets it to 0.1 s."""
    rows = json.loads((behaviour[1] / "current-seed_0" / "history.json").read_text())
    assert rows[-1]["timers"]["report"] / len(rows) < 0.5


def test_a_lora_checkpoint_is_the_adapter_only_and_loads_with_peft_alone(behaviour):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    best = Path(runs_of(behaviour[1])["current[seed=0]"]["best_checkpoint"])
    files = {p.name for p in best.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "training_state.pt",
        "spec.json",
        "manifest.json",
    } <= files
    assert "model.safetensors" not in files  # never the frozen base
    card = (best / "README.md").read_text()
    assert "# behaviour / current[seed=0], step 30" in card and "val loss " in card
    assert "library_name: peft" in card and "PEFT " in card  # ours, then peft's own additions
    job = JobConfig.model_validate_json((best / "spec.json").read_text())
    assert (job.spec.lora.rank, job.run_name) == (8, "current[seed=0]")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2"), str(best))
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 2048)


# --status, --report and diagnose read the experiment's folder from any machine: one process runs all three,
# as a user would from another terminal, and then says which of Ray's modules it imported.
READERS = """
import contextlib, io, json, sys
from orchestrator.diagnose.__main__ import main as diagnose
from orchestrator.launch import main as launch

spec, folder = sys.argv[1:]
out = {}
calls = {
    "status": lambda: launch([spec, "--status"]),
    "report": lambda: launch([spec, "--report"]),
    "diagnose": lambda: diagnose([folder]),
    "diagnose_hot": lambda: diagnose([folder, "--run", "hot_lr"]),
}
for name, call in calls.items():
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = call()
    out[name] = (code, text.getvalue())
out["ray"] = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
out["torch"] = "torch" in sys.modules
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def readers(behaviour):
    """What --status, --report (with summary.json deleted first) and diagnose print, from one fresh process."""
    folder = behaviour[1]
    before = _summary(folder)
    (folder / "summary.json").unlink()
    out = subprocess.run(
        [sys.executable, "-c", READERS, str(folder.parent.parent / "behaviour.yaml"), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return before, json.loads(out.stdout.splitlines()[-1])


def test_status_report_and_diagnose_read_storage_without_importing_ray_or_torch(readers):
    assert readers[1]["ray"] == [] and readers[1]["torch"] is False


def test_status_and_report_rebuild_from_storage(behaviour, readers):
    before, out = readers
    code, status = out["status"]
    assert code == 0
    lines = {line.split()[0]: line for line in status.splitlines()[2:]}
    assert "30/30" in lines["current[seed=0]"] and "completed" in lines["current[seed=0]"]
    assert "failed" in lines["broken"] and "diverged" in lines["diverge"]
    assert out["report"][0] == 0
    after = _summary(behaviour[1])
    assert after["verdict"] == before["verdict"] and after["runs"] == before["runs"]


def test_diagnose_reads_a_sweep_from_its_storage_folder(readers):
    code, text = readers[1]["diagnose"]
    assert code == 0
    assert text.startswith("# Training diagnosis: run current[seed=0] of experiment behaviour")
    assert "## Recommended Solutions (Prioritized)" in text
    hot = readers[1]["diagnose_hot"][1]
    assert re.search(r"\*\*Loss increased at step 10\*\*: val \d\.\d\d → ", hot)
    assert "paired bootstrap over val documents" in hot
