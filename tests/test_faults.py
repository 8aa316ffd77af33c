"""Interruptions cost at most one checkpoint interval: a killed driver, a relaunch, a corrupt checkpoint."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contract.layout import step_folder
from contract.report import Report
from contract.spec import JobConfig, StorageSpec
from jobs import checkpoint as ckpt
from orchestrator.folder import PLAN, ExperimentFolder
from orchestrator.spec import SpecError, load
from orchestrator.sweep.trial import job_configs
from tests.conftest import BEHAVIOUR, launch, registered
from tests.raynodes import kill_all, process_tree


@pytest.mark.ray
@pytest.mark.s3
def test_a_killed_driver_relaunched_resumes_every_run_and_rides_out_a_storage_outage(multinode, s3_env, tmp_path):
    """Two runs of the shared sweep's settings, on S3: `current`, and the same split into 2 micro-batches of 8.
    The driver and its local Ray are killed after both runs' step-10 checkpoints; the same command, run again,
    resumes both from there; during the relaunch the S3 server crashes for 8 s after a step-20 checkpoint, and
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
        while not all(registered(client, f"relaunch/behaviour/{run}/", step_folder(10)) for run in options):
            assert driver.poll() is None, f"the sweep ended before it could be interrupted: {first.read_text()[-3000:]}"
            time.sleep(0.1)
    finally:
        kill_all(process_tree(driver.pid))  # the driver and the local Ray it started die together, as in a crash
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
    time.sleep(8)  # past pyarrow's own retries (3 attempts, ~2 s): the budget storage.py gives them is tested
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
    done = [step for step in (10, 20, 30) if registered(client, prefix, step_folder(step))]
    return step_folder(max(done, default=0) + 10)


def test_a_relaunch_with_other_runs_is_refused_and_fresh_starts_a_new_name(tmp_path):
    experiment, plan = load("specs/smoke.yaml", [f"storage.path={tmp_path}", "control_seeds=1"], ["current"])
    folder = ExperimentFolder(experiment.storage, experiment.name)
    assert folder.start(experiment, plan, fresh=False) == (folder, experiment, False)
    assert (tmp_path / "smoke" / PLAN).is_file()
    assert folder.start(experiment, plan, fresh=False) == (folder, experiment, True)  # same plan: resume
    _, other = load("specs/smoke.yaml", [f"storage.path={tmp_path}", "control_seeds=1", "optim.lr=0.1"], ["current"])
    lr = plan.runs[0].spec.optim.lr
    with pytest.raises(SpecError, match=rf"  run current: spec.optim.lr: {lr} \(stored\) → 0.1\n.*--fresh"):
        folder.start(experiment, other, fresh=False)
    renamed, renamed_experiment, resuming = folder.start(experiment, other, fresh=True)
    assert (renamed.name, renamed_experiment.name, resuming) == ("smoke-2", "smoke-2", False)
    assert folder.start(experiment, other, fresh=True)[0].name == "smoke-3"
    assert renamed.plan()[1] == other  # what --status and --report read back


# Every experiment-level setting a resumed sweep would keep as it started (the Tune scheduler, its callbacks,
# the verdict's control and evaluation): each, changed alone, is refused by name with its stored value
EXPERIMENT_LEVEL = {
    "early_stopping.patience=3": "early_stopping.patience: 1 (stored) → 3",
    "early_stopping.enabled=false": "early_stopping.enabled: true (stored) → false",
    "control=full_finetune": 'control: "current" (stored) → "full_finetune"',
    "tracking.mlflow_uri=sqlite:///x.db": 'tracking.mlflow_uri: null (stored) → "sqlite:///x.db"',
    "max_concurrent=1": "max_concurrent: null (stored) → 1",
    "evaluation.selection_fraction=0.5": "evaluation.selection_fraction: null (stored) → 0.5",
}


@pytest.mark.parametrize("change,said", EXPERIMENT_LEVEL.items(), ids=list(EXPERIMENT_LEVEL))
def test_a_relaunch_that_changes_only_an_experiment_level_setting_is_refused(tmp_path, change, said):
    sets = [f"storage.path={tmp_path}", "control_seeds=1", "option_seeds=1"]
    experiment, plan = load("specs/smoke.yaml", sets, ["current", "full_finetune"])
    folder = ExperimentFolder(experiment.storage, experiment.name)
    folder.start(experiment, plan, fresh=False)
    changed, same_runs = load("specs/smoke.yaml", [*sets, change], ["current", "full_finetune"])
    with pytest.raises(SpecError) as refused:
        folder.start(changed, same_runs, fresh=False)
    assert f"\n  {said}\n" in str(refused.value)
    assert str(refused.value).endswith("or pass --fresh to start it over under a new name (smoke-2, ...)")


def test_a_relaunch_with_another_patience_exits_2_before_ray_starts(tmp_path):
    """The launcher, as a user runs it: the sweep is started (its plan.json, as a local launch writes it before Ray
    starts), then relaunched with another early_stopping.patience."""
    from orchestrator.launch import localize

    sets = [f"storage.path={tmp_path}", "control_seeds=1", "early_stopping.patience=1"]
    experiment, plan = load("specs/smoke.yaml", sets, ["current"])
    local = localize(experiment, plan, gpus=0, cores=1).plan  # its runs read data by absolute paths
    ExperimentFolder(experiment.storage, experiment.name).start(experiment, local, fresh=False)
    flags = [a for s in [*sets[:-1], "early_stopping.patience=2"] for a in ("--set", s)]
    out = launch("specs/smoke.yaml", "--local", "--only", "current", *flags, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr == (
        f"error: experiment 'smoke' in {tmp_path} was started with other settings than this launch asks for:\n"
        "  early_stopping.patience: 1 (stored) → 2\n"
        "Relaunch with the spec and flags it was started with to resume it, or pass --fresh to start it over under a "
        "new name (smoke-2, ...)\n"
    )
    assert "starting a local Ray instance" not in out.stdout  # the launcher says so just before it starts Ray


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


def test_an_experiment_of_the_previous_layout_reads_but_is_not_resumed(tmp_path):
    """tests/fixtures/sweep/smoke was recorded before the report record (folder layout 1): its histories read
    through the one conversion, with their checkpoints where they are now; a relaunch is refused, naming --fresh."""
    import shutil

    shutil.copytree("tests/fixtures/sweep/smoke", tmp_path / "smoke")
    folder = ExperimentFolder(StorageSpec(path=str(tmp_path)), "smoke")
    experiment, plan = folder.plan()
    (first, *_, last) = folder.history("current[seed=0]")
    assert (first.step, first.checkpoint, first.timers.eval) == (0, None, pytest.approx(1.1169270909999796))
    assert (last.step, last.checkpoint) == (60, "train-f42b0_00000/step_000060")
    assert folder.checkpoint_uri("current[seed=0]", last.checkpoint) == str(
        tmp_path / "smoke" / "current-seed_0" / "train-f42b0_00000" / "step_000060"
    )
    with pytest.raises(SpecError, match=r"earlier version of plateau-sweep \(folder layout 1; .*pass --fresh"):
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
        ckpt.save(tmp_path / step_folder(step), model, optimizer, job, Report(step=step, total_steps=30))
    (tmp_path / step_folder(30) / "training_state.pt").write_bytes(b"truncated")  # a write cut short
    (tmp_path / step_folder(20) / ckpt.MANIFEST).unlink()  # a copy that never finished
    skipped = []
    with ckpt.newest_complete(
        Checkpoint.from_directory(str(tmp_path / step_folder(30))), lambda err: skipped.append(str(err))
    ) as directory:
        assert Path(directory).name == step_folder(10)
    assert [s.split(": ", 1)[1] for s in skipped] == [
        "training_state.pt is missing or truncated",
        "no manifest.json; the checkpoint was not completely written",
    ]


def test_checkpoints_are_tried_newest_first_by_their_step_past_six_digits(tmp_path):
    """step_1000000 sorts before step_999999 by name; resume must try it first, then 999,999, then 10."""
    from ray.train import Checkpoint

    for step in (10, 999_999, 1_000_000):
        (tmp_path / step_folder(step)).mkdir()
    (tmp_path / "step_notes").mkdir()  # not a checkpoint
    latest = Checkpoint.from_directory(str(tmp_path / step_folder(1_000_000)))
    assert [Path(c.path).name for c in ckpt.candidates(latest)] == [
        step_folder(1_000_000),
        step_folder(999_999),
        step_folder(10),
    ]
