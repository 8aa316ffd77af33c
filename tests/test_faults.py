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
from tests.conftest import BEHAVIOUR, registered


@pytest.mark.ray
@pytest.mark.s3
def test_a_killed_driver_relaunched_resumes_every_run_and_rides_out_a_storage_outage(multinode, s3_env, tmp_path):
    """Two runs of the shared sweep's settings, on S3: `current`, and the same split into 2 micro-batches of 8.
    The driver and its local Ray are killed after both runs' step-10 checkpoints; the same command, run again,
    resumes both from there; during the relaunch the S3 server crashes for 15 s after a step-20 checkpoint, and
    uploads wait it out. Both end where the multi-node sweep's unbroken `current` ended."""
    import yaml

    spec = tmp_path / "relaunch.yaml"
    storage = {"path": "s3://sweeps/relaunch", "endpoint_url": s3_env.endpoint}
    options = {"current": {}, "micro_batches": BEHAVIOUR["options"]["micro_batches"]}
    spec.write_text(yaml.safe_dump({**BEHAVIOUR, "control_seeds": 1, "storage": storage, "options": options}))
    command = [sys.executable, "-m", "orchestrator.launch", str(spec), "--local"]
    client = s3_env.client()
    first = tmp_path / "first.log"
    driver = subprocess.Popen(command, stdout=first.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not all(registered(client, f"relaunch/behaviour/{run}/", "step_000010") for run in options):
            assert driver.poll() is None, f"the sweep ended before it could be interrupted: {first.read_text()[-3000:]}"
            time.sleep(0.1)
    finally:
        # The driver and the local Ray it started die together, as in a crash; by PID only.
        tree = [psutil.Process(driver.pid), *psutil.Process(driver.pid).children(recursive=True)]
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:  # exited meanwhile
                pass
        psutil.wait_procs(tree, timeout=30)
    # The outage follows a checkpoint the relaunch uploads: a run may have registered step 20 before the kill landed
    # (then its next is step 30), and S3 must not go down while the relaunch is still checking that it can reach it.
    following = {run: _next_checkpoint(client, f"relaunch/behaviour/{run}/") for run in options}
    relaunch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not any(registered(client, f"relaunch/behaviour/{run}/", step) for run, step in following.items()):
            assert relaunch.poll() is None, relaunch.stdout.read()[-3000:]
            time.sleep(0.1)
    finally:
        s3_env.stop(crash=True)
    time.sleep(15)
    s3_env.start()
    log, _ = relaunch.communicate(timeout=600)
    assert relaunch.returncode == 0, log[-3000:]
    assert "resuming experiment behaviour" in log
    summary = json.loads(client.get_object(Bucket="sweeps", Key="relaunch/behaviour/summary.json")["Body"].read())
    runs = {r["run"]: r for r in summary["runs"]}
    unbroken = {r["run"]: r for r in multinode["summary"]["runs"]}["current"]
    for name in options:
        run = runs[name]
        assert (run["status"], run["steps"]) == ("completed", 30)
        (restart,) = run["restarts"]
        assert restart["at_step"] in (10, 20)  # from its latest checkpoint when the driver died, not from scratch
        assert f"[{name}] resumed from the checkpoint at step {restart['at_step']}" in log
        assert [h["step"] for h in run["history"]] == [0, 10, 20, 30]  # nothing lost, nothing counted twice
        for key in ("final_val_loss", "final_train_loss"):
            assert run[key] == pytest.approx(unbroken[key], abs=1e-4)


def _next_checkpoint(client, prefix: str) -> str:
    """The checkpoint after the latest one registered under ``prefix`` (every 10 steps)."""
    done = [step for step in (10, 20, 30) if registered(client, prefix, f"step_{step:06d}")]
    return f"step_{max(done, default=0) + 10:06d}"


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
