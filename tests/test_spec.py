"""Specs: every shipped spec validates; bad ones are rejected naming file, option and field."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.launch import load, parse_sets
from orchestrator.spec import SpecError, deep_merge, json_schema

SPECS = sorted(Path("specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_shipped_spec_validates(path):
    experiment, runs = load(str(path))
    assert runs and all(r.spec for r in runs)
    if experiment.control:
        assert experiment.control in {r.option for r in runs}


def test_best_yaml_is_the_seeds_plan():
    experiment, runs = load("specs/best.yaml")
    by = {r.name: r.spec for r in runs}
    assert sorted(by) == sorted(["current", "lora_capacity", "lr_schedule", "long_context", "loose_clipping[grad_clip=2.0]", "loose_clipping[grad_clip=5.0]", "full_finetune"])
    base = by["lora_capacity"]
    assert (base.model.name, base.lora.rank, base.lora.alpha, base.optim.lr, base.run.steps) == ("gpt2", 16, 32.0, 2e-5, 5000)
    assert (base.data.block_size, base.data.batch_size, base.run.checkpoint_every) == (128, 16, 500)
    assert (by["current"].lora.rank, by["current"].lora.alpha, by["current"].optim.lr) == (8, 16.0, 1e-5)
    assert by["lr_schedule"].optim.schedule.kind == "warmup_linear" and by["lr_schedule"].warmup_steps == 250
    assert by["lr_schedule"].optim.schedule.floor_ratio == 0.5
    assert (by["long_context"].data.block_size, by["long_context"].data.batch_size) == (256, 8)
    assert by["loose_clipping[grad_clip=5.0]"].optim.grad_clip == 5.0
    full = by["full_finetune"]
    assert (full.method, full.data.block_size, full.data.batch_size, full.optim.lr) == ("full", 256, 8, 1e-5)


BAD = {
    "unknown field": ("base: {data: {blok_size: 64}}", "option 'base': data.blok_size: unknown field; did you mean 'block_size'?"),
    "block beyond n_positions": ("base: {model: {name: gpt2}, data: {block_size: 2048}}", "data.block_size: 2048 exceeds the model's n_positions 1024"),
    "warmup as long as the run": ("base: {run: {steps: 10, eval_every: 5, checkpoint_every: 10}, optim: {schedule: {kind: warmup_linear, warmup_ratio: 0.05}}}", "optim.schedule.warmup_ratio"),
    "eval interval beyond steps": ("base: {run: {steps: 10, eval_every: 20, checkpoint_every: 20}}", "run.eval_every: 20 is more than run.steps 10"),
    "checkpoint not at an eval": ("base: {run: {eval_every: 30, checkpoint_every: 50}}", "run.checkpoint_every: 50 is not a multiple of run.eval_every 30"),
    "lora with full": ("base: {method: full, lora: {rank: 4}}", "lora: LoRA settings given but method is 'full'"),
    "zero rank": ("base: {lora: {rank: 0}}", "lora.rank: Input should be greater than 0"),
    "negative lr": ("base: {optim: {lr: -1}}", "optim.lr: Input should be greater than 0"),
    "zero batch": ("base: {data: {batch_size: 0}}", "data.batch_size: Input should be greater than 0"),
    "missing data": ("base: {data: {path: nowhere.md}}", "data.path: data file 'nowhere.md' does not exist"),
    "warmup on constant": ("base: {optim: {schedule: {warmup_ratio: 0.1}}}", "warmup_ratio is set but kind is 'constant'"),
    "control not an option": ("control: nope\noptions: {a: {}}", "control: 'nope' is not an option"),
    "bad option in list": ("options: {clip: {optim: {grad_clip: [2.0, -1]}}}", "option 'clip[grad_clip=-1]': optim.grad_clip: Input should be greater than 0"),
    "not yaml": ("base: [unclosed", "not valid YAML at line"),
    "not a mapping": ("- a\n- b", "a spec must be a YAML mapping"),
}


@pytest.mark.parametrize("text,expected", BAD.values(), ids=list(BAD))
def test_bad_specs_are_rejected_naming_the_field(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load(str(path))
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_empty_data_file_is_rejected(tmp_path):
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "s.yaml").write_text(f"base: {{data: {{path: {tmp_path / 'empty.md'}}}}}")
    with pytest.raises(SpecError, match="data.path: data file .* is empty"):
        load(str(tmp_path / "s.yaml"))


def test_options_deep_merge_and_lists_expand():
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}, "d": None}) == {"a": {"b": 5, "c": 2}}
    experiment, runs = load("specs/smoke.yaml", only=["loose_clipping"])
    assert [r.name for r in runs] == ["loose_clipping[grad_clip=2.0]", "loose_clipping[grad_clip=5.0]"]
    assert runs[0].overrides == {"optim": {"grad_clip": 2.0}}
    assert runs[0].spec.lora.target_modules == ["c_attn"]  # list-typed fields are values, not sweeps


def test_set_overrides_every_run_and_experiment_fields():
    assert parse_sets(["run.steps=7", "storage.path=/x"]) == ({"storage": {"path": "/x"}}, {"run": {"steps": 7}})
    experiment, runs = load("specs/smoke.yaml", ["run.steps=40", "optim.lr=3e-4", "name=other"], ["current", "lora_capacity"])
    assert experiment.name == "other"
    assert [(r.spec.run.steps, r.spec.optim.lr) for r in runs] == [(40, 3e-4), (40, 3e-4)]
    with pytest.raises(SpecError, match="--only nope: no such option"):
        load("specs/smoke.yaml", only=["nope"])


def test_shipped_schema_is_current():
    assert json.loads(Path("specs/schema.json").read_text()) == json_schema()


def _launch(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator.launch", *args], capture_output=True, text=True, timeout=120)


def test_dry_run_prints_the_plan_and_starts_nothing():
    out = _launch("specs/best.yaml", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "experiment   best: 7 run(s), control current" in out.stdout
    assert "== loose_clipping[grad_clip=5.0]  (option loose_clipping)" in out.stdout
    assert "-> trainable params     589,824 of 125,029,632 (0.47%)" in out.stdout  # 36,864 x 16 on c_attn
    assert "-> tokens per step      2,048" in out.stdout
    assert "optim.schedule.floor_ratio" in out.stdout
    assert "Started a local Ray instance" not in out.stdout + out.stderr


def test_cli_rejects_a_bad_spec_with_exit_2_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("options: {wide: {data: {block_size: 4096}}}")
    out = _launch(str(path), "--dry-run")
    assert out.returncode == 2
    assert f"error: {path}: option 'wide': data.block_size: 4096 exceeds" in out.stderr
    assert "Traceback" not in out.stderr
    assert _launch("does/not/exist.yaml").returncode == 2
