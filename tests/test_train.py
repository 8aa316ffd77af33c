"""The training job on a real local Ray instance: it learns, checkpoints adapter-only, and resumes exactly."""

import json
import threading
import time
from pathlib import Path

import pytest

from orchestrator.launch import main
from orchestrator.spec import JobConfig

pytestmark = pytest.mark.ray
from tests.conftest import REFERENCE_ARGS as STEPS
from tests.conftest import registered
from tests.conftest import summary as _summary


@pytest.fixture
def trained(reference_run):
    return reference_run


def test_a_short_run_lowers_the_val_loss(trained):
    run = _summary(trained)["runs"][0]
    assert (run["run"], run["status"], run["steps"]) == ("lr_schedule", "completed", 40)
    vals = [h["val_loss"] for h in run["history"]]
    assert [h["step"] for h in run["history"]] == [10, 20, 30, 40]
    assert vals[-1] < vals[0]


def test_a_lora_checkpoint_is_the_adapter_only_and_loads_with_peft_alone(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    best = Path(_summary(trained)["runs"][0]["best_checkpoint"])
    files = {p.name for p in best.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "training_state.pt", "spec.json", "manifest.json", "README.md"} <= files
    assert "model.safetensors" not in files  # never the frozen base
    card = (best / "README.md").read_text()
    assert "# smoke / lr_schedule, step 40" in card and "val loss " in card
    assert "library_name: peft" in card and "PEFT " in card  # ours, then peft's own additions
    assert JobConfig.model_validate_json((best / "spec.json").read_text()).spec.optim.schedule.kind == "warmup_linear"
    base = AutoModelForCausalLM.from_pretrained("jobs/assets/tiny-gpt2")
    model = PeftModel.from_pretrained(base, str(best))
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 1024)


def _kill_train_worker_after(checkpoint: str, root: Path, launch: threading.Thread) -> int:
    """Wait until a checkpoint is registered, then SIGKILL this test's RayTrainWorker process; returns its PID."""
    import psutil

    while not registered(root, checkpoint):
        assert launch.is_alive(), f"the launch ended before {checkpoint} was registered under {root}"
        time.sleep(0.05)
    workers = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 1, workers
    workers[0].kill()
    return workers[0].pid


def test_resume_after_a_killed_worker_continues_at_the_saved_step_with_the_same_lr_and_data(trained, tmp_path):
    """Kill the training worker after its step-20 checkpoint; Ray Train restarts it from that checkpoint
    (ray.train.get_checkpoint()) and the run ends exactly where the uninterrupted run did."""
    result: dict = {}
    launch = threading.Thread(target=lambda: result.update(code=main(["specs/smoke.yaml", "--local", "--only", "lr_schedule", "--set", f"storage.path={tmp_path}", *STEPS])))
    launch.start()
    _kill_train_worker_after("step_000020", tmp_path, launch)
    launch.join(timeout=600)
    assert result["code"] == 0

    reference = _summary(trained)["runs"][0]
    resumed = _summary(tmp_path)["runs"][0]
    assert resumed["status"] == "completed" and resumed["steps"] == 40
    steps = [h["step"] for h in resumed["history"]]
    assert steps[-1] == 40 and 20 in steps
    # Resumed from step 20, not from scratch: steps after 20 may repeat (work lost since the checkpoint), none before.
    assert steps.count(10) == 1 and steps.count(20) == 1
    final = json.loads(next(tmp_path.glob("smoke/lr_schedule/train-*/step_000040/metrics.json")).read_text())
    expected = json.loads(next(trained.glob("smoke/lr_schedule/train-*/step_000040/metrics.json")).read_text())
    assert final["lr"] == pytest.approx(expected["lr"], rel=1e-12)
    assert final["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-4)
    assert final["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-4)
    assert resumed["final_val_loss"] == pytest.approx(reference["final_val_loss"], abs=1e-4)
