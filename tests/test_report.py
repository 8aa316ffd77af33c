"""The report record (contract.report): one typed record from the worker to summary.json, whatever its fields."""

import json
import subprocess
import sys

from contract.report import RANKED_BY, Report

# A metric added the way a maintainer adds one: a field on the record, and the worker setting it. Nothing else is
# edited: the worker's report, Tune's result, the History callback, the experiment folder, the records and
# summary.json must carry it, through the real code (the worker's loop in Ray Train's local mode, no cluster).
ONE_EDIT = """
import json, sys
from pathlib import Path
from types import SimpleNamespace

from pydantic import Field

import contract.report


class Report(contract.report.Report):
    grad_noise_scale: float | None = Field(None, description="A new metric; null where it was not measured.")


contract.report.Report = Report  # the edit to the record, before any module reads it

import jobs.train

built = jobs.train._build_report
jobs.train._build_report = lambda *args: built(*args).model_copy(update={"grad_noise_scale": 0.125})  # measured

from orchestrator.folder import ExperimentFolder
from orchestrator.launch import report
from orchestrator.spec import load
from orchestrator.sweep.callbacks import History
from orchestrator.sweep.trial import job_configs

sets = [f"storage.path={sys.argv[1]}", "control_seeds=1", "run.steps=2", "run.eval_every=2", "run.checkpoint_every=2"]
experiment, plan = load(None, sets, ["current"])
folder, experiment, _ = ExperimentFolder(experiment.storage, experiment.name).start(experiment, plan, fresh=False)
(job,) = job_configs(experiment, plan)
last = jobs.train.train_in_process(job)
result = {**last.model_dump(), "training_iteration": 2, "trial_id": "0", "done": True}  # as Tune passes it on
History(folder).on_trial_result(2, [], SimpleNamespace(config={"job": job}), result)
report(folder, experiment, plan)
history, summary = Path(folder.run_uri("current"), "history.json"), Path(folder.uri, "summary.json")
print(json.dumps({"history": json.loads(history.read_text()), "summary": json.loads(summary.read_text())}))
"""


def test_a_metric_added_to_the_record_reaches_summary_json_with_no_other_edit(tmp_path):
    out = subprocess.run([sys.executable, "-c", ONE_EDIT, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    stored = json.loads(out.stdout.splitlines()[-1])
    assert [(row["step"], row["grad_noise_scale"]) for row in stored["history"]] == [(2, 0.125)]  # its last report
    (run,) = stored["summary"]["runs"]
    assert [(h["step"], h["grad_noise_scale"]) for h in run["history"]] == [(2, 0.125)]


def test_a_report_keeps_its_own_fields_of_a_tune_result_and_nothing_else():
    report = Report(step=10, total_steps=20, val_loss=4.0, doc_nll=[8.0], doc_tokens=[2])
    result = {**report.model_dump(), "timestamp": 1, "training_iteration": 3, "checkpoint_dir_name": "x", "done": 0}
    assert Report.from_result(result) == report


def test_ray_ranks_checkpoints_by_a_field_of_the_record():
    assert RANKED_BY in Report.model_fields and Report.model_fields[RANKED_BY].annotation == float | None
