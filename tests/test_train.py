"""The training job on a real local Ray instance: it learns, checkpoints adapter-only, and resumes exactly."""

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from contract.spec import JobConfig
from orchestrator.launch import main
from tests.conftest import BEHAVIOUR, registered, runs_of
from tests.conftest import summary as _summary

pytestmark = pytest.mark.ray


def test_a_short_run_lowers_the_val_loss_from_the_pretrained_models(reference_run):
    run = _summary(reference_run)["runs"][0]
    assert (run["run"], run["status"], run["steps"]) == ("lr_schedule", "completed", 40)
    assert [h["step"] for h in run["history"]] == [0, 10, 20, 30, 40]
    assert (
        run["first_val_loss"] - run["final_val_loss"] >= 0.1
    )  # nats per token, in 40 steps of LoRA r16 (it gains about 0.19)


def test_each_report_stays_cheap(reference_run):
    """Ray Train makes report() wait for its controller's poll (2 s by default); the trial sets it to 0.1 s."""
    rows = json.loads((reference_run / "smoke" / "lr_schedule" / "history.json").read_text())
    assert rows[-1]["time_report_s"] / len(rows) < 0.5


def test_a_lora_checkpoint_is_the_adapter_only_and_loads_with_peft_alone(reference_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    best = Path(_summary(reference_run)["runs"][0]["best_checkpoint"])
    files = {p.name for p in best.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "training_state.pt",
        "spec.json",
        "manifest.json",
        "README.md",
    } <= files
    assert "model.safetensors" not in files  # never the frozen base
    card = (best / "README.md").read_text()
    assert "# smoke / lr_schedule, step 40" in card and "val loss " in card
    assert "library_name: peft" in card and "PEFT " in card  # ours, then peft's own additions
    job = JobConfig.model_validate_json((best / "spec.json").read_text())
    assert (job.spec.optim.schedule.kind, job.run_name) == ("warmup_linear", "lr_schedule")
    base = AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2")
    model = PeftModel.from_pretrained(base, str(best))
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 2048)


def _kill_one_train_worker_after(checkpoint: str, root: Path, launch: threading.Thread) -> int:
    """Wait until a checkpoint is registered, then SIGKILL one of this test's RayTrainWorker processes; returns its
    PID."""
    import psutil

    while not registered(root, checkpoint):
        assert launch.is_alive(), f"the launch ended before {checkpoint} was registered under {root}"
        time.sleep(0.05)
    workers = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, workers
    workers[1].kill()
    return workers[1].pid


def test_a_two_worker_run_killed_after_a_checkpoint_resumes_to_the_unbroken_result(behaviour, tmp_path):
    """Kill one of the two data-parallel workers after the step-10 checkpoint; Ray Train restarts the group from
    that checkpoint and the run ends where the unbroken two-worker run of the shared sweep ended."""
    import yaml

    spec = tmp_path / "two.yaml"
    spec.write_text(
        yaml.safe_dump({**BEHAVIOUR, "control": None, "options": {"two_workers": BEHAVIOUR["options"]["two_workers"]}})
    )
    result: dict = {}
    launch = threading.Thread(
        target=lambda: result.update(code=main([str(spec), "--local", "--set", f"storage.path={tmp_path}"]))
    )
    launch.start()
    _kill_one_train_worker_after("step_000010", tmp_path, launch)
    # --status from another process, from storage alone, while the run recovers
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator.launch", str(spec), "--status", "--set", f"storage.path={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert re.search(
        r"^two_workers\s+[123]0/30\s+\d\.\d{4}\s+\d\.\d{4}\s+(running|completed)\s", status.stdout, re.M
    ), status.stdout
    launch.join(timeout=600)
    assert result["code"] == 0

    resumed = runs_of(tmp_path / "behaviour")["two_workers"]
    unbroken = runs_of(behaviour[1])["two_workers"]
    assert resumed["status"] == "completed" and resumed["steps"] == 30
    steps = [h["step"] for h in resumed["history"]]
    assert steps[-1] == 30 and steps.count(0) == 1 and steps.count(10) == 1  # resumed from step 10, not from scratch
    assert resumed["final_val_loss"] == pytest.approx(unbroken["final_val_loss"], abs=1e-4)
    assert resumed["final_train_loss"] == pytest.approx(unbroken["final_train_loss"], abs=1e-4)
