"""Interruptions cost at most one checkpoint interval: a killed driver, a relaunch, a corrupt checkpoint."""

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from contract.spec import JobConfig
from jobs import checkpoint as ckpt
from orchestrator.folder import PLAN, ExperimentFolder
from orchestrator.spec import SpecError, load
from orchestrator.sweep.trial import job_configs
from tests.conftest import REFERENCE_ARGS, registered, runs_of, summary


@pytest.mark.ray
def test_a_killed_driver_relaunched_resumes_every_unfinished_run(reference_run, tmp_path):
    command = [
        sys.executable,
        "-m",
        "orchestrator.launch",
        "specs/smoke.yaml",
        "--local",
        "--only",
        "lr_schedule",
        "--only",
        "current",
        *REFERENCE_ARGS,
        "--set",
        "control_seeds=1",
        "--set",
        f"storage.path={tmp_path}",
    ]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not all(registered(tmp_path / "smoke" / run, "step_000020") for run in ("lr_schedule", "current")):
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.05)
    finally:
        # The driver and the local Ray it started die together, as in a crash; by PID only.
        tree = [psutil.Process(driver.pid)] + psutil.Process(driver.pid).children(recursive=True)
        for process in tree:
            process.kill()
        psutil.wait_procs(tree, timeout=30)
    assert not (tmp_path / "smoke" / "summary.json").exists()

    relaunch = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    log = relaunch.stdout + relaunch.stderr
    assert "resuming experiment smoke" in log
    runs = runs_of(tmp_path / "smoke")
    for name in ("lr_schedule", "current"):
        assert runs[name]["status"] == "completed" and runs[name]["steps"] == 40
        assert f"[{name}] resumed from the checkpoint at step 20" in log  # not from scratch
        steps = [r["step"] for r in json.loads((tmp_path / "smoke" / name / "history.json").read_text())]
        assert steps[-1] == 40 and steps.count(10) == 1  # nothing before the checkpoint was trained again
        assert len(steps) - len(set(steps)) <= 1  # at most the one interval after it
    reference = summary(reference_run)["runs"][0]
    assert runs["lr_schedule"]["final_val_loss"] == pytest.approx(reference["final_val_loss"], abs=1e-4)


def test_a_relaunch_with_other_runs_is_refused_and_fresh_starts_a_new_name(tmp_path):
    experiment, plan = load("specs/smoke.yaml", [f"storage.path={tmp_path}", "control_seeds=1"], ["current"])
    folder = ExperimentFolder(experiment.storage, experiment.name)
    assert folder.start(experiment, plan, fresh=False) == (folder, experiment, False)
    assert (tmp_path / "smoke" / PLAN).is_file()
    assert folder.start(experiment, plan, fresh=False) == (folder, experiment, True)  # same plan: resume
    _, other = load("specs/smoke.yaml", [f"storage.path={tmp_path}", "control_seeds=1", "optim.lr=0.1"], ["current"])
    with pytest.raises(SpecError, match="was started with different runs \\(differing: current\\).*--fresh"):
        folder.start(experiment, other, fresh=False)
    renamed, renamed_experiment, resuming = folder.start(experiment, other, fresh=True)
    assert (renamed.name, renamed_experiment.name, resuming) == ("smoke-2", "smoke-2", False)
    assert folder.start(experiment, other, fresh=True)[0].name == "smoke-3"
    assert renamed.plan()[1] == other  # what --status and --report read back


def test_a_folder_from_an_earlier_version_or_a_damaged_plan_is_refused_not_crashed(tmp_path):
    experiment, plan = load("specs/smoke.yaml", [f"storage.path={tmp_path}", "control_seeds=1"], ["current"])
    folder = ExperimentFolder(experiment.storage, experiment.name)
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / PLAN).write_text("[]")  # the earlier format: a list of jobs
    with pytest.raises(SpecError, match="written by an earlier version of plateau-sweep.*--fresh"):
        folder.start(experiment, plan, fresh=False)
    (tmp_path / "smoke" / PLAN).write_text("{not json")
    with pytest.raises(SpecError, match="unreadable .*the experiment folder is damaged"):
        folder.start(experiment, plan, fresh=False)


def test_an_incomplete_checkpoint_is_never_chosen(tmp_path):
    from ray.train import Checkpoint
    from transformers import AutoModelForCausalLM

    (job,) = [
        JobConfig.model_validate(c) for c in job_configs(*load("specs/smoke.yaml", ["control_seeds=1"], ["current"]))
    ]
    model = AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2")
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (10, 20, 30):
        ckpt.save(tmp_path / f"step_{step:06d}", model, optimizer, step, job, {"step": step})
    (tmp_path / "step_000030" / "training_state.pt").write_bytes(b"truncated")  # a write cut short
    (tmp_path / "step_000020" / ckpt.MANIFEST).unlink()  # a copy that never finished
    skipped = []
    with ckpt.newest_complete(
        Checkpoint.from_directory(str(tmp_path / "step_000030")), lambda err: skipped.append(str(err))
    ) as directory:
        assert Path(directory).name == "step_000010"
    assert [s.split(": ", 1)[1] for s in skipped] == [
        "training_state.pt is missing or truncated",
        "no manifest.json; the checkpoint was not completely written",
    ]
