"""Specs: every shipped spec validates and round-trips; bad ones are rejected naming file, option and field."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contract.spec import JobConfig
from orchestrator.spec import SpecError, deep_merge, json_schema, load, parse_sets
from orchestrator.sweep.trial import job_configs
from tests.conftest import launch

SPECS = sorted(Path("specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_shipped_spec_validates_and_every_run_round_trips(path):
    """What a checkpoint's spec.json holds (a full dump) loads back into the same job, for every run."""
    experiment, plan = load(str(path))
    assert plan.runs
    if experiment.control:
        assert experiment.control in {r.option for r in plan.runs}
    for dumped in job_configs(experiment, plan):
        job = JobConfig.model_validate(dumped)
        assert JobConfig.model_validate_json(job.model_dump_json()) == job


def test_best_yaml_is_the_seeds_plan():
    experiment, plan = load("specs/best.yaml")
    by = {r.name: r.spec for r in plan.runs}
    variants = [
        "lora_capacity",
        "lr_schedule",
        "long_context",
        "loose_clipping[grad_clip=2.0]",
        "loose_clipping[grad_clip=5.0]",
        "full_finetune",
    ]
    # 2 seeds each by default, every variant its own: the control 0 and 1, then the options in the spec's order
    seeded = [
        f"{v[:-1]},seed={s}]" if v.endswith("]") else f"{v}[seed={s}]"
        for i, v in enumerate(variants)
        for s in (2 + 2 * i, 3 + 2 * i)
    ]
    assert sorted(by) == sorted(["current[seed=0]", "current[seed=1]", *seeded])
    by = {r.variant: r.spec for r in plan.runs}
    base = by["lora_capacity"]
    assert (base.model.name, base.lora.rank, base.lora.alpha, base.optim.lr, base.run.steps) == (
        "gpt2",
        16,
        32.0,
        2e-5,
        5000,
    )
    assert (base.data.block_size, base.data.batch_size, base.run.checkpoint_every) == (128, 16, 500)
    assert {r.spec.run.seed for r in plan.runs if r.option == "current"} == {0, 1}  # control_seeds: 2 by default
    current = by["current"]
    assert (current.lora.rank, current.lora.alpha, current.optim.lr) == (8, 16.0, 1e-5)
    assert by["lr_schedule"].optim.schedule.kind == "warmup_linear" and by["lr_schedule"].warmup_steps == 250
    assert by["lr_schedule"].optim.schedule.floor_ratio == 0.5
    assert (by["long_context"].data.block_size, by["long_context"].data.batch_size) == (256, 8)
    assert by["loose_clipping[grad_clip=5.0]"].optim.grad_clip == 5.0
    full = by["full_finetune"]
    assert (full.method, full.lora, full.data.block_size, full.data.batch_size, full.optim.lr) == (
        "full",
        None,
        256,
        8,
        1e-5,
    )
    assert (plan.evaluation.context, plan.evaluation.stride) == (256, 128)  # the largest block, for every run


BAD = {
    "unknown field": (
        "base: {data: {blok_size: 64}}",
        "option 'base': data.blok_size: unknown field; did you mean 'block_size'?",
    ),
    "block beyond n_positions": (
        "base: {model: {name: gpt2}, data: {block_size: 2048}}",
        "data.block_size: 2048 exceeds the model's n_positions 1024",
    ),
    "warmup as long as the run": (
        "base: {run: {steps: 10, eval_every: 5, checkpoint_every: 10}, optim: {schedule: {kind: warmup_linear, "
        "warmup_ratio: 0.05, floor_ratio: 0.1}}}",
        "optim.schedule.warmup_ratio",
    ),
    "eval interval beyond steps": (
        "base: {run: {steps: 10, eval_every: 20, checkpoint_every: 20}}",
        "run.eval_every: 20 is more than run.steps 10",
    ),
    "checkpoint not at an eval": (
        "base: {run: {eval_every: 30, checkpoint_every: 50}}",
        "run.checkpoint_every: 50 is not a multiple of run.eval_every 30",
    ),
    "lora with full": (
        "base: {method: full, lora: {rank: 4}}",
        "lora: LoRA settings given but method is 'full'; set `lora: null`",
    ),
    "full without lora: null": ("base: {method: full}", "lora: LoRA settings given but method is 'full'"),
    "lora: null with lora": ("base: {lora: null}", "lora: method 'lora' needs LoRA settings"),
    "floor on a constant schedule": (
        "base: {optim: {schedule: {floor_ratio: 0.5}}}",
        "floor_ratio: only applies to kind: warmup_linear",
    ),
    "decay without a floor": (
        "base: {optim: {schedule: {kind: warmup_linear, warmup_ratio: 0.1}}}",
        "optim.schedule: floor_ratio: kind 'warmup_linear' needs one",
    ),
    "batch not split by workers": (
        "base: {data: {batch_size: 16}, resources: {num_workers: 3}}",
        "data.batch_size: 16 does not split evenly over resources.num_workers 3; use a multiple of 3 (15, 18)",
    ),
    "micro-batch not dividing": (
        "base: {data: {batch_size: 16}, resources: {num_workers: 2}, compute: {micro_batch_size: 3}}",
        "compute.micro_batch_size: 3 does not divide each worker's share of the batch (16 / 2 worker(s) = 8); use one "
        "of [1, 2, 4, 8]",
    ),
    "runs on different val documents": (
        "control: a\noptions: {a: {}, b: {data: {val_fraction: 0.2}}}",
        "option 'b': data.val_fraction is 0.2 but 0.1 in 'a[seed=0]'; every run is scored on the same val documents",
    ),
    "runs with different tokenizers": (
        "options: {a: {}, b: {model: {tokenizer: gpt2}}}",
        "the tokenizer (model.tokenizer, or model.name) is 'gpt2' but 'tiny-gpt2'",
    ),
    "a repeated seed": (
        "options: {a: {run: {seed: [0, 0]}}}",
        "runs 'a[seed=0]' and 'a[seed=0]' would share the folder 'a-seed_0'",
    ),
    "a control that sweeps": (
        "control: a\noptions: {a: {optim: {grad_clip: [1.0, 2.0]}}}",
        "option 'a' (the control) sweeps a setting into a[grad_clip=1.0], a[grad_clip=2.0]",
    ),
    "an endpoint without a scheme": (
        "storage: {path: 's3://b/x', endpoint_url: 'minio:9000'}",
        "storage.endpoint_url 'minio:9000' has no scheme; write http://minio:9000",
    ),
    "a selection share of one document": (
        "evaluation: {max_documents: 1, selection_fraction: 0.5}",
        "evaluation.selection_fraction needs at least 2 val documents",
    ),
    "stride as long as the context": (
        "evaluation: {context: 64, stride: 64}",
        "evaluation.stride: 64 is not less than evaluation.context 64",
    ),
    "context beyond the model": ("evaluation: {context: 512}", "evaluation.context: 512 exceeds the n_positions 256"),
    "zero rank": ("base: {lora: {rank: 0}}", "lora.rank: Input should be greater than 0"),
    "negative lr": ("base: {optim: {lr: -1}}", "optim.lr: Input should be greater than 0"),
    "zero batch": ("base: {data: {batch_size: 0}}", "data.batch_size: Input should be greater than 0"),
    "warmup on constant": (
        "base: {optim: {schedule: {warmup_ratio: 0.1}}}",
        "warmup_ratio: set, but kind is 'constant'",
    ),
    "control not an option": ("control: nope\noptions: {a: {}}", "control: 'nope' is not an option"),
    "bad option in list": (
        "options: {clip: {optim: {grad_clip: [2.0, -1]}}}",
        "option 'clip[grad_clip=-1]': optim.grad_clip: Input should be greater than 0",
    ),
    "an LR search without a selection share": (
        "lr_search: {}\noptions: {a: {}}",
        "lr_search: each option's best LR is chosen on a share of the val documents and scored on the rest",
    ),
    "an LR search over an LR list": (
        "lr_search: {}\nevaluation: {selection_fraction: 0.5}\noptions: {a: {optim: {lr: [1.0e-3, 1.0e-2]}}}",
        "option 'a': optim.lr is a list, and lr_search searches the learning rate; give this option's learning rates "
        "in lr_search.lrs.a instead",
    ),
    "an LR search's arm on several seeds": (
        "lr_search: {}\nevaluation: {selection_fraction: 0.5}\noptions: {a: {run: {seed: [0, 1]}}}",
        "option 'a': run.seed lists 2 seeds, but in an LR search each arm runs one seed",
    ),
    "a first rung inside the warmup": (
        "lr_search: {first_rung: 20}\nevaluation: {selection_fraction: 0.5}\nbase: {run: {steps: 100, eval_every: 20,"
        " checkpoint_every: 20}, optim: {schedule: {kind: warmup_constant, warmup_ratio: 0.3}}}",
        "lr_search.first_rung: 20 must be an evaluation step (a multiple of run.eval_every 20) at or after the warmup "
        "(30 steps) of option 'base'; use 40",
    ),
    "LRs for no option": (
        "lr_search: {lrs: {b: [1.0e-3, 1.0e-2]}}\nevaluation: {selection_fraction: 0.5}\noptions: {a: {}}",
        "lr_search.lrs: b is not an option",
    ),
    "one LR is no search": (
        "lr_search: {lrs: {a: [1.0e-3]}}\nevaluation: {selection_fraction: 0.5}\noptions: {a: {}}",
        "lrs.a: [0.001] must be at least 2 distinct learning rates above 0",
    ),
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


def test_options_deep_merge_and_lists_expand():
    # null is a value ("not applicable"), not a deletion: a full fine-tune says lora: null
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}, "d": None}) == {"a": {"b": 5, "c": 2}, "d": None}
    _, plan = load("specs/smoke.yaml", ["option_seeds=1"], only=["loose_clipping"])
    assert [(r.name, r.variant) for r in plan.runs] == [
        ("loose_clipping[grad_clip=2.0]", "loose_clipping[grad_clip=2.0]"),
        ("loose_clipping[grad_clip=5.0]", "loose_clipping[grad_clip=5.0]"),
    ]
    assert plan.runs[0].overrides == {"optim": {"grad_clip": 2.0}}
    assert plan.runs[0].spec.lora.target_modules == ["c_attn"]  # list-typed fields are values, not sweeps


def test_seeds_expand_into_runs_of_one_variant_and_the_control_gets_its_seeds():
    _, plan = load("specs/smoke.yaml", ["run.seed=[3, 4]"], ["current", "loose_clipping"])
    names = [(r.name, r.variant, r.spec.run.seed) for r in plan.runs]
    assert ("loose_clipping[grad_clip=2.0,seed=4]", "loose_clipping[grad_clip=2.0]", 4) in names
    assert [n for n in names if n[1] == "current"] == [
        ("current[seed=3]", "current", 3),
        ("current[seed=4]", "current", 4),
    ]  # listed seeds win
    _, plan = load("specs/smoke.yaml", ["control_seeds=3", "run.seed=7"], ["current"])
    assert [r.spec.run.seed for r in plan.runs] == [7, 8, 9]
    _, plan = load("specs/smoke.yaml", ["control_seeds=1"], ["current"])
    assert [r.name for r in plan.runs] == ["current"]
    # every other option: option_seeds, after the control's 4 and lora_capacity's 3, whether --only keeps them or not
    _, plan = load("specs/smoke.yaml", ["option_seeds=3"], ["lr_schedule"])
    assert [(r.name, r.variant) for r in plan.runs] == [(f"lr_schedule[seed={s}]", "lr_schedule") for s in (7, 8, 9)]


def test_an_lr_search_gives_every_variant_arms_and_the_control_keeps_its_own_seeds(tmp_path):
    spec = tmp_path / "search.yaml"
    spec.write_text(
        "control: current\nevaluation: {selection_fraction: 0.5}\n"
        "lr_search: {factors: [0.5, 1, 3], lrs: {full: [1.0e-4, 1.0e-3]}}\n"
        "base: {optim: {lr: 2.0e-3, schedule: {kind: warmup_constant, warmup_ratio: 0.3}}, "
        "run: {steps: 100, eval_every: 10, checkpoint_every: 10}}\n"
        "options: {current: {}, clip: {optim: {grad_clip: [2.0, 5.0]}}, full: {method: full, lora: null}}\n"
    )
    _, plan = load(str(spec))
    runs = {r.name: r for r in plan.runs}
    assert [r.name for r in plan.runs if r.search is None] == ["current[seed=0]", "current[seed=1]"]
    assert [(s.name, s.lrs, s.rungs) for s in plan.searches] == [
        ("current", [0.001, 0.002, 0.006], [30, 60]),  # factors of its own lr; the first rung after the warmup
        ("clip[grad_clip=2.0]", [0.001, 0.002, 0.006], [30, 60]),  # every grid point searched on its own
        ("clip[grad_clip=5.0]", [0.001, 0.002, 0.006], [30, 60]),
        ("full", [1e-4, 1e-3], [30, 60]),  # an explicit list
    ]
    arm = runs["clip[grad_clip=5.0,lr=0.006]"]
    assert (arm.search, arm.variant, arm.spec.optim.lr, arm.spec.optim.grad_clip) == (
        "clip[grad_clip=5.0]",
        arm.name,
        0.006,
        5.0,
    )
    assert arm.overrides == {"optim": {"grad_clip": 5.0, "lr": 0.006}}
    # every arm on a seed of its own, after the control's: the control's 3, then each variant's in turn
    assert [runs[f"current[lr={lr}]"].spec.run.seed for lr in (0.001, 0.002, 0.006)] == [2, 3, 4]
    assert len({r.spec.run.seed for r in plan.runs}) == len(plan.runs)


def test_set_overrides_every_run_and_experiment_fields():
    assert parse_sets(["run.steps=7", "storage.path=/x"]) == ({"storage": {"path": "/x"}}, {"run": {"steps": 7}})
    experiment, plan = load(
        "specs/smoke.yaml",
        ["run.steps=40", "optim.lr=3e-4", "name=other", "control_seeds=1", "option_seeds=1"],
        ["current", "lora_capacity"],
    )
    assert experiment.name == "other"
    assert [(r.spec.run.steps, r.spec.optim.lr) for r in plan.runs] == [(40, 3e-4), (40, 3e-4)]
    with pytest.raises(SpecError, match="--only nope: no such option"):
        load("specs/smoke.yaml", only=["nope"])


def test_shipped_schema_is_current():
    assert json.loads(Path("specs/schema.json").read_text()) == json_schema()


def test_dry_run_prints_the_plan_and_starts_nothing(hub_cache):
    out = launch(
        "specs/best.yaml", "--dry-run", "--local", env={"HF_HUB_CACHE": str(hub_cache), "CUDA_VISIBLE_DEVICES": ""}
    )  # --local would start Ray, were --dry-run to go on
    assert out.returncode == 0, out.stderr
    assert "experiment   best: 14 run(s), control current" in out.stdout
    assert (
        "seeds        control 2 (0, 1), other variants 2 each (2-13): the seed noise every interval counts, pooled "
        "over 7 variant(s) with 7 degree(s) of freedom; 7 extra run(s), 50% of the sweep's training tokens"
        in out.stdout
    )
    assert "evaluation   every run scored on the same val tokens: windows of 256 tokens every 128" in out.stdout
    assert "== loose_clipping[grad_clip=5.0,seed=11]  (option loose_clipping)" in out.stdout
    lora = 36_864 * 16  # (768 in + 2,304 out) x rank 16 on c_attn, in 12 layers
    assert f"-> trainable params     {lora:,} of {124_439_808 + lora:,} (" in out.stdout
    assert "-> effective batch      16 sequences = 1 worker x micro-batch 16 x 1 accumulation step" in out.stdout
    assert "starting a local Ray instance" not in out.stdout + out.stderr
    # no max_concurrent and no GPU: the plan says what local mode chose, not "as many as the resources hold"
    assert re.search(r"\nconcurrency  \d+ \(local mode, from this machine's cores\)\n", out.stdout)


def test_the_plan_of_a_two_worker_run_shows_how_the_batch_splits():
    out = launch(
        "specs/smoke.yaml",
        "--dry-run",
        "--only",
        "lora_capacity",
        "--set",
        "resources.num_workers=2",
        "--set",
        "compute.micro_batch_size=4",
    )
    assert out.returncode == 0, out.stderr
    assert "-> effective batch      16 sequences = 2 workers x micro-batch 4 x 2 accumulation steps" in out.stdout
    assert "-> tokens per step      2,048" in out.stdout  # the experiment's batch, whatever the workers


def test_local_storage_is_refused_on_a_multi_node_cluster_unless_declared_shared():
    from contract.spec import StorageSpec
    from orchestrator.sweep.trial import check_storage_reaches

    check_storage_reaches(1, StorageSpec(path="/tmp/runs"))  # one node: its disk is the storage
    check_storage_reaches(3, StorageSpec(path="s3://bucket/sweeps"))
    check_storage_reaches(3, StorageSpec(path="/mnt/nfs/sweeps", shared=True))
    with pytest.raises(SpecError, match="local folder, but this Ray cluster has 3 nodes.*storage.shared: true"):
        check_storage_reaches(3, StorageSpec(path="/tmp/runs"))
    with pytest.raises(ValueError, match="storage.shared: every node reaches an s3:// path already"):
        StorageSpec(path="s3://bucket/sweeps", shared=True)


def test_the_launcher_imports_neither_torch_nor_ray_until_it_runs_something():
    """--help, --status and a spec's errors answer in a second: torch and Ray are imported where they are needed."""
    code = "import sys, orchestrator.launch; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# A dry run and a diagnosis of a log, in one fresh process, as a user runs them; then which heavy modules it imported
TORCH_FREE = """
import contextlib, io, json, sys
from orchestrator.diagnose.__main__ import main as diagnose
from orchestrator.launch import main as launch

log, command = sys.argv[1:]
codes = {}
with contextlib.redirect_stdout(io.StringIO()) as printed:
    codes["dry_run"] = launch(["specs/best.yaml", "--dry-run"])
    codes["diagnose"] = diagnose([log, "--command", command])
    codes["jsonl"] = diagnose(["tests/fixtures/logs/capacity.jsonl"])  # JSONL: contract.documents reads it
heavy = sorted(m for m in ("torch", "transformers", "peft", "ray") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy, "printed": printed.getvalue()}))
"""


def test_a_dry_run_and_a_diagnosis_never_import_torch(hub_cache):
    """The plan's parameter counts come from the model's config (contract.parameters), the corpus is read and
    tokenized without transformers (contract.documents, tokenizers): neither needs torch, transformers or Ray."""
    from tests.test_diagnose import SEED_CURRENT, SEED_LOG

    out = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, SEED_LOG, SEED_CURRENT.replace("MODEL_TYPE=gpt2", "MODEL_TYPE=tiny-gpt2")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_CACHE": str(hub_cache)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["codes"] == {"dry_run": 0, "diagnose": 0, "jsonl": 0}
    assert "-> trainable params     589,824 of 125,029,632 (" in result["printed"]  # counted: gpt2, LoRA r16
    # the corpus counted by the preset's tokenizer, as a run of the preset counts it (jobs.data: 45,496 train tokens)
    assert "Data: 45,496 training tokens, 18 val documents (5,080 tokens)" in result["printed"]
    assert result["heavy"] == []
