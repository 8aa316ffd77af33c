"""Readers: each format people keep, read from a real public log (tests/fixtures/real_logs/<slug>/, with its
provenance.yaml) or from a real run, into the points it holds and the keys it took them from. What is not training or
evaluation is left and said, NaN and inf are evidence, a log with no loss exits 2 naming what it found, and a file
that yields fewer than three points is never called healthy."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.diagnose.__main__ import main
from orchestrator.diagnose.logs import LogError, parse
from orchestrator.diagnose.rules import Context, diagnose, logged_schedule

REAL = Path("tests/fixtures/real_logs")


def real(slug: str) -> str:
    """The log of a real-log fixture (the one file beside its provenance.yaml)."""
    (log,) = [p for p in (REAL / slug).iterdir() if p.name != "provenance.yaml"]
    return str(log)


# What each real log holds, read by hand from the file (see its provenance.yaml): the format, the keys the curve must
# come from, (train points, evaluations, first step, last step), and the records that must be left, by reason.
READS = {
    "tanghulu6__llama3-8b-mob__wandb-output-log": (
        "Hugging Face Trainer console log",
        {"train_loss": "loss", "val_loss": "eval_loss", "lr": "learning_rate", "grad_norm": "grad_norm"},
        (51, 25, 1, 245),
        {"the end-of-run summary": 1},
    ),
    "nhanhqq__llmonvnsailor2__trainer-csv": (
        "Hugging Face Trainer log_history (CSV)",
        {"step": "step", "train_loss": "loss", "lr": "learning_rate", "grad_norm": "grad_norm", "epoch": "epoch"},
        (100, 0, 1, 100),
        {"the end-of-run summary": 1},
    ),
    "narimt__a5__dpo-trainer-csv": (
        "Hugging Face Trainer log_history (CSV)",
        {"train_loss": "loss", "val_loss": "eval_loss", "lr": "learning_rate", "grad_norm": "grad_norm"},
        (91, 91, 10, 910),
        {"the end-of-run summary": 1},
    ),
    "smallnub__bachelor-thesis__log-history-json": (
        "Hugging Face Trainer log_history (JSON)",
        {"train_loss": "loss", "val_loss": "eval_loss", "lr": "learning_rate"},
        (7, 8, 0, 7),
        {"the end-of-run summary": 1},
    ),
    "rameyjm7__sft-training-llm__llamafactory-log": (
        "LLaMA-Factory trainer_log.jsonl",
        {"step": "current_steps", "train_loss": "loss", "lr": "lr", "epoch": "epoch"},
        (656, 0, 10, 6560),
        {"no value in": 2},  # its two final progress rows
    ),
    "0xero7__slm-training__lightning-metrics": (
        "Lightning metrics.csv",
        {"step": "step", "train_loss": "train_loss_step", "val_loss": "val_loss", "epoch": "epoch"},
        (114, 20, 49, 5739),
        {"no value in": 20},  # the per-epoch mean rows
    ),
    "arun-vedu__thai-summarizer__wandb-history": (
        "W&B run history (CSV)",
        {"step": "train/global_step", "train_loss": "train/loss", "lr": "train/learning_rate"},
        (2, 0, 500, 1000),
        {"no value in": 1},
    ),
    "druidowm__nanogpt__wandb-panel-export": (
        "W&B chart export (CSV), run `gpt2_last_char_to_char1729642919.4054031`",
        {"step": "Step", "train_loss": "train/loss"},
        (51, 0, 0, 50),
        {},
    ),
    "m-abdullah-ali-2468__urdu-questions-generator__epoch-csv": (
        "CSV of per-step metrics",
        {"train_loss": "Training Loss", "val_loss": "Validation Loss", "epoch": "Epoch"},
        (12, 12, 1, 12),  # no step: one row per epoch
        {},
    ),
    "netra-ai-lab__netra-nmt__step-jsonl": (
        "JSONL of per-step metrics",
        {"step": "step", "train_loss": "train_loss", "val_loss": "val_loss"},
        (7, 7, 28859, 115433),
        {},
    ),
    "sachinnchaudhary__frontier-training-lab__jsonl": (
        "JSONL of per-step metrics",
        {"val_loss": "validation_loss", "lr": "learning_rate", "grad_norm": "gradient_norm"},
        (200, 200, 0, 1990),
        {"no step": 1},  # its run_config line
    ),
}


@pytest.mark.parametrize("slug", list(READS))
def test_each_real_log_is_read_into_its_points_from_the_keys_it_names(slug):
    label, mapping, (trains, evals, first, last), left = READS[slug]
    log = parse(real(slug))
    reading = log.reading
    assert reading.format == label
    assert mapping.items() <= reading.mapping.items()
    assert (len(log.trains), len(log.evals), log.points[0].step, log.points[-1].step) == (trains, evals, first, last)
    assert (reading.trains, reading.evals, reading.steps) == (trains, evals, (first, last))
    assert {s.reason.split(",")[0].split(" `")[0]: len(s.where) for s in reading.skipped} == left
    assert not reading.nonfinite


def test_a_trainer_console_log_is_read_with_the_steps_its_schedule_ran_at():
    """W&B's copy of a QLoRA run's console: tqdm bars of training (n/250) and of evaluation (n/100) around the dict
    lines. Its config says warmup 5 then linear decay of 2e-4 to 0 at step 250 and eval every 5 steps, so the LR a line
    logs tells its true step, which the reader never sees."""
    log = parse(real("tanghulu6__llama3-8b-mob__wandb-output-log"))
    ran_at = {p.step: round(250 - p.lr * 245 / 2e-4) for p in log.trains if p.step >= 5}  # the step the LR was set for
    assert len(ran_at) == 50
    # One line lands a step early: W&B's copy lost the 201/250 bar, and the bar redrawn at 200 after the step-200
    # evaluation and checkpoint is the last one before it (its epoch, 0.8, cannot tell 200 from 201).
    assert {step: at for step, at in ran_at.items() if step != at} == {200: 201}
    assert all(p.step % 5 == 0 for p in log.evals)
    assert (log.evals[0].val_loss, log.evals[-1].val_loss) == (0.37383994460105896, 0.3615178167819977)


def test_a_trainer_csv_is_read_whole_not_as_its_summary_row(capsys, tmp_path):
    """The issue's second failure: a Trainer-named CSV was read as its one summary row, LR skipped, and called
    healthy. Now every step is a point, the LR column is the Trainer's `learning_rate`, the summary is left and said."""
    log = parse(real("nhanhqq__llmonvnsailor2__trainer-csv"))
    assert [p.step for p in log.trains] == list(range(1, 101))
    kind, peak, _ = logged_schedule(log)
    assert (kind, peak) == ("warmup_decay", 2e-4)  # 5 warmup steps to 2e-4, linear decay to 2.1e-6
    (summary,) = log.reading.skipped
    assert summary.where == ["line 102"] and "its train_loss 0.207 is the mean over the run" in summary.detail
    out = tmp_path / "d.json"
    assert main([real("nhanhqq__llmonvnsailor2__trainer-csv"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "- Skipped 1 record: the end-of-run summary, not a point of the curve (line 102)" in printed
    assert "train loss ← `loss`; LR ← `learning_rate`; grad norm ← `grad_norm`" in printed
    assert json.loads(out.read_text())["reading"]["mapping"]["lr"] == "learning_rate"


def test_a_wandb_chart_export_reads_one_run_and_names_the_others():
    path = real("druidowm__nanogpt__wandb-panel-export")
    log = parse(path, run="gpt2")
    assert (len(log.trains), log.trains[0].train_loss, log.trains[-1].step) == (386, 10.95404052734375, 385)
    assert "The export holds 8 runs" in " ".join(parse(path).reading.notes)
    with pytest.raises(LogError, match="--run 'gpt3': no such run in this W&B export; choose from .*, gpt2,"):
        parse(path, run="gpt3")


REFUSED = {
    "a log with no loss names the keys it has and the ones expected": (
        "aa-n__qwen3-lora__llamafactory-summary-only",
        "no training or evaluation loss in this LLaMA-Factory trainer_log.jsonl: keys found: current_steps, "
        "total_steps, epoch, percentage, elapsed_time, remaining_time, throughput, total_tokens; expected a train loss "
        "(loss, train_loss, train/loss, ",
    ),
    "a W&B runs table is not a curve": (
        "lucas-longxutang__comp3242-nanogpt__wandb-runs-table",
        "a W&B runs table (64 rows, one per run, with each run's summary values), not a run's history",
    ),
}


@pytest.mark.parametrize("slug,message", REFUSED.values(), ids=list(REFUSED))
def test_a_real_log_without_a_curve_exits_2_saying_what_it_found(slug, message):
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.diagnose", real(slug)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: {real(slug)}: {message}")


# ------------------------------------------------------------------ a real run that diverges

# A real Trainer run that goes to NaN (LR 1e3), saved as people save runs: its console as nohup writes it (stdout and
# stderr to one file), log_history as a pandas CSV (with its index column), trainer_state.json with the predict()
# metrics appended as scripts do (no step), and the same run with the NaN filter off, saved without the index.
DIVERGING = r"""
import contextlib, io, sys
import pandas as pd, torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

out = sys.argv[1]


def run(nan_filter):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2")
    data = [{"input_ids": b, "labels": b} for b in torch.randint(0, 2048, (32, 16))]
    args = TrainingArguments(
        output_dir=f"{out}/trainer", max_steps=12, per_device_train_batch_size=2, learning_rate=1e3,
        lr_scheduler_type="constant", logging_steps=1, eval_strategy="steps", eval_steps=4,
        per_device_eval_batch_size=4, logging_nan_inf_filter=nan_filter, report_to=[], save_strategy="no",
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:4])
    trainer.train()
    return trainer, data


with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    raw, _ = run(nan_filter=False)
pd.DataFrame(raw.state.log_history).to_csv(f"{out}/raw.csv", index=False)
trainer, data = run(nan_filter=True)
pd.DataFrame(trainer.state.log_history).to_csv(f"{out}/log_history.csv")
trainer.state.log_history.append(trainer.predict(data[:4], metric_key_prefix="predict").metrics)
trainer.state.save_to_json(f"{out}/trainer_state.json")
"""


ONE_RUN = pytest.mark.xdist_group("diverged")  # one process runs the tests that read it, so the run happens once


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    out = tmp_path_factory.mktemp("diverged")
    with (out / "console.log").open("w") as console:
        done = subprocess.run(
            [sys.executable, "-c", DIVERGING, str(out)],
            stdout=console,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            timeout=300,
        )
    assert done.returncode == 0, (out / "console.log").read_text()[-3000:]
    return out


@ONE_RUN
def test_nan_gradient_norms_are_evidence_in_the_diagnosis_never_dropped(diverged, capsys, tmp_path):
    """The issue's CSV dropped 23 NaN gradient norms without a word. Here the Trainer logs a finite loss (its NaN
    filter writes 0) beside NaN norms and NaN evaluations, and pandas writes each NaN as an empty cell: the diagnosis
    leads with them, counted, where they start, as trainer_state.json of the same run records them."""
    truth = parse(str(diverged / "trainer_state.json")).reading.nonfinite
    assert {(n.field, tuple(n.steps)) for n in truth} == {("grad_norm", tuple(range(2, 13))), ("val_loss", (4, 8, 12))}
    out = tmp_path / "d.json"
    assert main([str(diverged / "log_history.csv"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    diagnosis = json.loads(out.read_text())
    first = diagnosis["findings"][0]
    assert first["rule"] == "numerics" and first["confidence"] == "high"
    assert first["title"] == "Non-finite values from step 2: every value after is NaN or inf"
    assert (
        "grad norm (`grad_norm`): 11 of 12 logged values are non-finite (11 blank), steps 2 to 12" in first["evidence"]
    )
    assert "logged as exactly 0 after step 2" in first["evidence"]  # the filter's output, not a perfect fit
    bad = {
        n["field"]: (n["first_step"], n["last_step"], n["count"], n["of"]) for n in diagnosis["reading"]["nonfinite"]
    }
    assert bad == {"grad_norm": (2, 12, 11, 12), "val_loss": (4, 12, 3, 3)}  # every evaluation is NaN
    assert diagnosis["healthy"] is False
    assert "## Before any sweep: make the numbers finite" in printed
    assert "## Root Causes (ranked by evidence)\n\nNone to rank until you make the numbers finite" in printed
    assert "(11 blank where rows of their kind have a value, as pandas writes NaN), steps 2 to 12" in printed


@ONE_RUN
def test_a_file_of_many_rows_with_fewer_than_three_points_is_not_called_healthy(diverged, capsys, tmp_path):
    """The same run with the NaN filter off: 16 rows, and only steps 1 and 2 have a finite loss."""
    out = tmp_path / "d.json"
    assert main([str(diverged / "raw.csv"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    diagnosis = json.loads(out.read_text())
    # issue 31: too few points to show health, but a loss NaN from step 3 on shows a broken run all the same
    assert diagnosis["healthy"] is False and diagnosis["options"] == []
    assert {f["rule"] for f in diagnosis["findings"]} >= {"evidence", "numerics"}
    assert diagnosis["reading"]["records"] == 16 and diagnosis["reading"]["points"] == 2
    assert "The log cannot show the run's health: 2 points read from 16 records" in printed
    assert "Keep training" not in printed and "The run is healthy" not in printed


@ONE_RUN
def test_predict_entries_without_a_step_are_left_and_the_rest_is_read(diverged):
    """The issue's third failure: a trainer_state.json refused whole for its step-less predict_* entry."""
    log = parse(str(diverged / "trainer_state.json"))
    reasons = {s.reason: s.where for s in log.reading.skipped}
    assert reasons["predict_* or test_* entries, neither training nor evaluation"] == ["log_history[16]"]
    from_csv = parse(str(diverged / "log_history.csv"))
    assert [(p.step, p.train_loss) for p in log.trains] == [(p.step, p.train_loss) for p in from_csv.trains]
    assert len(log.trains) == 12


@ONE_RUN
def test_a_console_log_under_buffered_stdout_gets_the_steps_trainer_state_records(diverged):
    """The issue's first failure: a console log was refused. This one is nohup-style (stdout buffered, tqdm's stderr
    not), in transformers 5's format (values as strings, 'nan'); its steps must be the ones log_history records."""
    console = parse(str(diverged / "console.log"))
    truth = parse(str(diverged / "trainer_state.json"))
    assert console.reading.format == "Hugging Face Trainer console log"
    assert [p.step for p in console.trains] == [p.step for p in truth.trains] == list(range(1, 13))
    for got, want in zip(console.trains, truth.trains):
        assert math.isclose(got.train_loss, want.train_loss, rel_tol=1e-3)  # printed to 4 significant digits
    nan_evals = {n.field: n.steps for n in console.reading.nonfinite}["val_loss"]
    assert nan_evals == [4, 8, 12]  # eval_steps=4: every evaluation NaN, at its step


# ------------------------------------------------------------------ formats that are not text: converted real logs


def _lightning_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(open(real("0xero7__slm-training__lightning-metrics"))))


def test_tensorboard_events_read_the_same_curve_as_the_log_they_hold(tmp_path, capsys):
    """The Lightning run's metrics.csv written as its TensorBoard logger would (same names, same steps), with the
    tensorboardX writer the sweeps use, and read back from the run directory and from the event file."""
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "lightning_logs" / "version_0"))
    for row in _lightning_rows():
        for key, value in row.items():
            if key != "step" and value:
                writer.add_scalar(key, float(value), int(row["step"]))
    writer.close()
    from_csv = parse(real("0xero7__slm-training__lightning-metrics"))
    for source in (tmp_path, next((tmp_path / "lightning_logs" / "version_0").iterdir())):
        log = parse(str(source))
        assert log.reading.format == "TensorBoard event file"
        assert [p.step for p in log.points] == [p.step for p in from_csv.points]
        for got, want in zip(log.points, from_csv.points):
            for name in ("train_loss", "val_loss"):
                a, b = getattr(got, name), getattr(want, name)
                assert (a is None) == (b is None) and (a is None or math.isclose(a, b, rel_tol=1e-6))  # float32
    assert main([str(tmp_path)]) == 0  # a directory of event files is a log, not an experiment folder
    assert f"- TensorBoard event file: {len(from_csv.points)} records read, 134 points" in capsys.readouterr().out


def test_without_the_tensorboard_package_the_error_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
    for name in ("tensorboard", "tensorboard.backend.event_processing.event_accumulator", "tensorboard.util"):
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed: importing it raises ImportError
    with pytest.raises(LogError, match=r"needs the tensorboard package: pip install 'plateau-sweep\[tensorboard\]'"):
        parse(str(tmp_path))


def test_an_mlflow_run_reads_the_same_curve_as_the_log_it_holds(tmp_path, monkeypatch):
    """The DPO run's log_history logged as the Trainer's MLflow callback logs it (every numeric key at its step, the
    summary at the last) into a real SQLite store, and read back as runs:/<run_id>."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("a5-dpo"), run_name="dpo")
    metrics = [
        Metric(key, float(value), 0, int(row["step"]))
        for row in csv.DictReader(open(real("narimt__a5__dpo-trainer-csv")))
        for key, value in row.items()
        if key != "step" and value
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    log = parse(f"runs:/{run.info.run_id}")
    from_csv = parse(real("narimt__a5__dpo-trainer-csv"))
    assert log.reading.format.startswith("MLflow run `dpo` in sqlite:///")
    assert [(p.step, p.train_loss, p.val_loss, p.lr) for p in log.points] == [
        (p.step, p.train_loss, p.val_loss, p.lr) for p in from_csv.points
    ]
    assert [s.reason for s in log.reading.skipped] == ["the end-of-run summary, not a point of the curve"]
    with pytest.raises(
        LogError, match="runs:/0123abc: not found in the tracking store sqlite:///.*MLFLOW_TRACKING_URI"
    ):
        parse("runs:/0123abc")


# ------------------------------------------------------------------ small cases and bad input


def test_csv_and_jsonl_logs(tmp_path):
    (tmp_path / "zero.csv").write_text("step,train_loss,val_loss\n1,0,0\n2,0,0.5\n")
    diagnose(parse(str(tmp_path / "zero.csv")), Context({}))  # zero losses divide nothing
    (tmp_path / "m.csv").write_text(
        "step,train_loss,val_loss,lr,epoch\n100,5.0,5.1,1e-3,0.5\n200,4.5,4.6,1e-3,1.0\n300,4.4,4.9,1e-3,1.5\n"
    )
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "train_loss": t, "val_loss": v}) for s, t, v in [(1, 3.0, 3.1), (2, 2.9, 3.0)])
    )
    csv_log, jsonl_log = parse(str(tmp_path / "m.csv")), parse(str(tmp_path / "m.jsonl"))
    assert [(p.step, p.val_loss, p.epoch) for p in csv_log.evals] == [(100, 5.1, 0.5), (200, 4.6, 1.0), (300, 4.9, 1.5)]
    # a rise at the last evaluation alone: possibly noise until the next one, never yet a regression
    (rise,) = diagnose(csv_log, Context({}))
    assert rise.rule == "noise" and "the next one tells a spike from a trend" in rise.evidence
    assert jsonl_log.source == "JSONL of per-step metrics" and len(jsonl_log.evals) == 2


BAD = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary (a NUL byte at offset 8)"),
    "empty": (b"", "the file is empty"),
    "another format": (b"<html><body>not a log</body></html>\n", "line 1: not a format this reads"),
    "a broken eval line": (
        b"step 100: train loss 5.0, val loss 5.1\nstep 200: train loss oops\n",
        "line 2: an evaluation line that does not read as",
    ),
    "a broken jsonl line": (b'{"step": 1, "val_loss": 3.0}\n{"step": 2,\n', "line 2: not valid JSON"),
    "a csv with a bad number": (
        b"step,train_loss,val_loss\n1,3.0,3.1\n2,x,3.0\n",
        "line 3: train_loss 'x' is not a number",
    ),
    "json that is not a trainer state": (b'{\n  "hello": 1\n}\n', "JSON without a log_history list"),
    "a csv without a loss column": (
        b"epoch,mean_loss,lr\n0,2046.5,0.001\n1,2021.9,0.001\n",
        "no training or evaluation loss in this CSV of per-step metrics: keys found: epoch, mean_loss, lr; expected",
    ),
    "deeply nested json": (
        b'{"log_history": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
        "nested too deeply to be a training log",
    ),
}


@pytest.mark.parametrize("raw,expected", BAD.values(), ids=list(BAD))
def test_bad_input_exits_2_naming_the_file_without_a_traceback(tmp_path, raw, expected):
    path = tmp_path / "log.txt"
    path.write_bytes(raw)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.diagnose", str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert f"error: {path}: " in out.stderr and expected in out.stderr
    assert "Traceback" not in out.stderr
