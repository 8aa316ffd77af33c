"""Diagnosis: from the seed's numbers, a real trainer_state.json and a nanoGPT log, to findings, options and a spec."""

import json
import subprocess
import sys

import pytest

from orchestrator.diagnose import advice
from orchestrator.diagnose.__main__ import main
from orchestrator.diagnose.command import import_command
from orchestrator.diagnose.logs import parse
from orchestrator.diagnose.rules import Context, diagnose
from orchestrator.spec import load

SEED_LOG = "tests/fixtures/seed_log.txt"  # the seed's numbers, as a nanoGPT-style log
# The seed's current configuration, as a command in its training script's interface
SEED_CURRENT = (
    "TRAINING_DATA_SOURCE=sources/training_data_final_merged.md MODEL_TYPE=gpt2 USE_LORA=True LORA_RANK=8 "
    "LORA_ALPHA=16.0 "
    "TRAINING_STEPS=5000 LEARNING_RATE=1e-5 BLOCK_SIZE=128 BATCH_SIZE=16 ENABLE_CHECKPOINTS=True "
    "CHECKPOINT_INTERVAL=500 python3 training.py"
)
# Verbatim from the seed: "Recommended Training Command (Best Balance)" and Option 5
SEED_BEST = """TRAINING_DATA_SOURCE=sources/training_data_final_merged.md \\
MODEL_TYPE=gpt2 \\
USE_LORA=True \\
LORA_RANK=16 \\
LORA_ALPHA=32.0 \\
TRAINING_STEPS=5000 \\
LEARNING_RATE=2e-5 \\
BLOCK_SIZE=128 \\
BATCH_SIZE=16 \\
ENABLE_CHECKPOINTS=True \\
CHECKPOINT_INTERVAL=500 \\
python3 training.py"""
SEED_OPTION_5 = """USE_LORA=False \\
BATCH_SIZE=8 \\
BLOCK_SIZE=256 \\
LEARNING_RATE=1e-5 \\
python training.py"""


def test_the_seeds_commands_import_to_exactly_the_values_it_states():
    best = import_command(SEED_BEST)
    assert best.config == {
        "data": {"path": "sources/training_data_final_merged.md", "block_size": 128, "batch_size": 16},
        "model": {"name": "gpt2"},
        "method": "lora",
        "lora": {"rank": 16, "alpha": 32.0},
        "run": {"steps": 5000, "checkpoint_every": 500, "eval_every": 500},
        "optim": {"lr": 2e-5},
    }
    assert best.unknown == []
    option5 = import_command(SEED_OPTION_5)
    assert option5.config == {
        "method": "full",
        "lora": None,
        "data": {"batch_size": 8, "block_size": 256},
        "optim": {"lr": 1e-5},
    }


def test_an_unknown_variable_is_listed_not_dropped():
    imported = import_command("USE_LORA=True GRAD_ACCUM=4 LORA_RANK=8 python training.py")
    assert imported.unknown == ["GRAD_ACCUM=4"]
    assert imported.config == {"method": "lora", "lora": {"rank": 8}}


def test_what_the_command_leaves_out_is_described_as_the_run_will_use_it():
    lora = advice.describe_config(Context(import_command("USE_LORA=True LORA_RANK=8 python training.py").config))
    assert (
        lora[0] == "Method: lora, LoRA rank 8, alpha 16.0"
    )  # the spec's default alpha, as the emitted spec would run it
    full = advice.describe_config(Context(import_command("USE_LORA=False BLOCK_SIZE=256 python training.py").config))
    assert full[0] == "Method: full" and "Block size: 256" in full  # no LoRA line for full fine-tuning


def _seed_diagnosis():
    log = parse(SEED_LOG)
    config = import_command(SEED_CURRENT).config
    ctx = Context(config, intended_batch=32, vocabulary=50257)
    return log, config, ctx, diagnose(log, ctx)


def test_the_seeds_numbers_give_its_observed_issues():
    log, _, _, findings = _seed_diagnosis()
    assert [p.step for p in log.evals] == [1500, 2000, 2500]  # iter lines and other noise ignored
    by = {f.rule: f for f in findings}
    assert by["regression"].evidence == "val 6.71 → 6.93 at step 2000, +3.3%; train 6.67 → 6.75"
    assert by["plateau"].title == "Loss plateauing from step 1500 to 2500"
    assert {"schedule", "batch", "underfit", "lora_capacity"} <= set(by)


def test_the_seeds_options_come_out_in_the_seeds_order_and_the_spec_runs():
    _, config, ctx, findings = _seed_diagnosis()
    opts = advice.options(config, findings)
    keys = [o.key for o in opts]
    seed_order = ["lora_capacity", "lr_schedule", "long_context", "loose_clipping", "full_finetune"]
    assert [k for k in keys if k in seed_order] == seed_order
    assert "restore_batch" in keys  # batch 16 instead of the intended 32: keep 32 with accumulation
    assert next(o for o in opts if o.key == "lora_capacity").overrides == {
        "lora": {"rank": 16, "alpha": 32.0},
        "optim": {"lr": 2e-5},
    }  # the seed's Option 1


def test_the_emitted_spec_passes_dry_run_with_the_current_configuration_as_control(tmp_path, capsys):
    out = tmp_path / "fixes.yaml"
    code = main([SEED_LOG, "--command", SEED_CURRENT, "--intended-batch", "32", "--emit-spec", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for section in (
        "## Current Issues Observed",
        "## Root Causes (ranked by evidence)",
        "## Recommended Solutions (Prioritized)",
        "## Monitoring Strategy",
    ):
        assert section in printed
    experiment, plan = load(str(out))
    assert experiment.control == "current"
    control = next(r for r in plan.runs if r.option == "current").spec
    assert (control.lora.rank, control.optim.lr, control.data.batch_size, control.model.name) == (8, 1e-5, 16, "gpt2")
    restore = next(r for r in plan.runs if r.option == "restore_batch").spec
    assert (restore.data.batch_size, restore.micro_batch, restore.accumulation_steps) == (32, 16, 2)


def test_a_real_trainer_state_json(tmp_path):
    """Written by a short transformers.Trainer run of the bundled model."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2")
    blocks = torch.randint(0, 2048, (32, 32))
    dataset = [{"input_ids": b, "labels": b} for b in blocks]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset[:8])
    trainer.train()
    state = tmp_path / "trainer_state.json"
    trainer.state.save_to_json(str(state))
    log = parse(str(state))
    assert log.source == "trainer_state.json"
    assert [p.step for p in log.evals] == [2, 4, 6]
    assert all(p.train_loss is not None and p.lr is not None for p in log.evals)
    assert len(log.grad_norms) == 3
    assert main([str(state)]) == 0


def test_a_spec_cannot_be_written_where_there_is_no_folder(capsys):
    assert main([SEED_LOG, "--emit-spec", "/nonexistent/folder/fixes.yaml"]) == 2
    assert "error: --emit-spec /nonexistent/folder/fixes.yaml: cannot write it" in capsys.readouterr().err


def test_csv_and_jsonl_logs(tmp_path):
    (tmp_path / "zero.csv").write_text("step,train_loss,val_loss\n1,0,0\n2,0,0.5\n")
    assert [f.rule for f in diagnose(parse(str(tmp_path / "zero.csv")), Context({}))] == [
        "regression"
    ]  # zero losses divide nothing
    (tmp_path / "m.csv").write_text(
        "step,train_loss,val_loss,lr\n100,5.0,5.1,1e-3\n200,4.5,4.6,1e-3\n300,4.4,4.9,1e-3\n"
    )
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "train_loss": t, "val_loss": v}) for s, t, v in [(1, 3.0, 3.1), (2, 2.9, 3.0)])
    )
    csv_log, jsonl_log = parse(str(tmp_path / "m.csv")), parse(str(tmp_path / "m.jsonl"))
    assert [(p.step, p.val_loss) for p in csv_log.evals] == [(100, 5.1), (200, 4.6), (300, 4.9)]
    assert [f.rule for f in diagnose(csv_log, Context({}))][:1] == ["regression"]
    assert jsonl_log.source == "JSONL" and len(jsonl_log.evals) == 2


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
